"""Every edge refuses a webhook replay, also after a restart: the signed requests any edge
accepted, read back from the processors' idempotency topic.

An accepted webhook request carries `replay_key(t, v1)` as its Idempotency-Key, so the
processors record its first verdict on the compacted idempotency topic (processors.idempotency)
and never process a replay of it, whichever edge took the replay. This tail reads those
records from the beginning and tells the edge's `SeenSignatures`, so the replay is also
answered 401. Between an acceptance and its record (the processor's turn, normally well under
a second) another edge still answers a replay 202; the processors then answer it as a
duplicate and land nothing.
"""

from __future__ import annotations

import time
from functools import partial

from confluent_kafka import Message

from bus.tail import TopicTail
from producers.edge.webhook_signature import REPLAY_KEY_PREFIX, SeenSignatures, parse_replay_key

_MARK = ("/" + REPLAY_KEY_PREFIX).encode()


def accepted_signatures(bootstrap: str, idempotency_topic: str, seen: SeenSignatures,
                        longest_tolerance_s: float) -> TopicTail:
    """A tail of the idempotency topic that tells `seen` every signature the processors recorded,
    each until `t + longest_tolerance_s`; start it and wait until it is ready."""
    return TopicTail(bootstrap, idempotency_topic, partial(remember_accepted, seen, longest_tolerance_s),
                     name="webhook-replays")


def remember_accepted(seen: SeenSignatures, longest_tolerance_s: float, message: Message) -> None:
    """Tell `seen` the signature one idempotency record names, if it names one not yet stale."""
    key = message.key()
    # Most records are other requests' keys: skip them without decoding anything.
    if not key or _MARK not in key or message.value() is None:
        return
    # The store's id: org/key id (the integration's, for a webhook)/target/Idempotency-Key.
    text = key.decode(errors="replace")
    parts, parsed = text.split("/"), parse_replay_key(text.rpartition("/")[2])
    if parsed is None or len(parts) < 3:
        return
    timestamp, v1 = parsed
    forget_at = timestamp + longest_tolerance_s
    if forget_at > time.time():  # older ones are stale: the time check refuses them
        seen.remember(parts[1], v1, forget_at)
