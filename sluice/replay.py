"""`sluice replay`: send dead-lettered requests through the pipeline again.

Reads the deadletter topic from the beginning up to the end it had when the
replay started (so the dead letters a replay itself causes are not replayed
again in the same run), keeps those matching the filters, and produces one raw
envelope per request, rebuilt from its dead letter. The processor then judges
it afresh against today's catalog; its new verdict lands in the ingest log
next to the old one. Nothing is committed: the replay leaves no consumer-group
state behind.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets

from confluent_kafka import Producer

import schemas
from bus.tail import TopicTail
from config import Settings
from processors.outcome import NOT_A_REQUEST
from producers.edge.submit import Target
from schemas.topics import MessageLimits

log = logging.getLogger(__name__)


class ReplayError(RuntimeError):
    """The replay could not read the deadletter topic to its end, or a message was not delivered."""


def default_bootstrap(settings: Settings) -> str:
    """KAFKA_BOOTSTRAP_SERVERS, else the broker `sluice up` runs locally."""
    return settings.kafka_bootstrap or f"127.0.0.1:{settings.local_kafka_port}"


def parse_since(text: str) -> int:
    """Epoch milliseconds from digits (already epoch ms) or an ISO 8601 time (naive = UTC).

    Raises ValueError for anything else.
    """
    text = text.strip()
    if text.isdigit():
        return int(text)
    moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return int(moment.timestamp() * 1000)


def replay_dead_letters(bootstrap: str, settings: Settings, reason: str | None = None,
                        request_id: str | None = None, since_ms: int | None = None,
                        dry_run: bool = False, timeout: float = 30.0) -> tuple[int, int]:
    """Replay the dead letters matching every given filter; returns (matched, replayed).

    Filters: `reason` (the dead letter's code, e.g. UNKNOWN_METRIC), `request_id`,
    `since_ms` (rejected at or after this epoch-ms time). `matched` counts dead
    letters; `replayed` counts requests produced to the raw topic: each request
    once however many dead letters it has, none for an undecodable raw message
    or with `dry_run`. Blocks while reading and until every envelope is
    acknowledged (acks=all). Raises ReplayError if the topic cannot be read to
    its end within `timeout` seconds (broker unreachable included), or a delivery fails.
    """
    topics = schemas.Topics(settings.topic_prefix)
    matched = 0
    envelopes: dict[str, dict] = {}  # request id -> envelope; a later dead letter wins
    limits = MessageLimits.for_body(settings.max_body_bytes)
    for dead in _dead_letters(bootstrap, topics.deadletter, limits.output, timeout):
        if reason is not None and dead["reason"] != reason:
            continue
        if request_id is not None and dead["request_id"] != request_id:
            continue
        if since_ms is not None and dead["rejected_at"] < since_ms:
            continue
        matched += 1
        if dead["route"] != NOT_A_REQUEST:  # not a request at all: nothing to rebuild
            envelopes[dead["request_id"]] = _envelope(dead)
    if dry_run or not envelopes:
        return matched, 0
    _produce(bootstrap, topics.raw, list(envelopes.values()), limits.raw, timeout)
    return matched, len(envelopes)


def _envelope(dead: dict) -> dict:
    """The raw envelope a dead letter came from, as a deliberate reprocess: same
    request id and acceptance time (so re-ingested readings overwrite any earlier
    copy), and no Idempotency-Key (which would answer with the old verdict)."""
    return {
        "request_id": dead["request_id"],
        "org_id": dead["org_id"],
        "key_id": dead["key_id"],
        "route": dead["route"],
        "received_at": dead["received_at"],
        "thing_id": dead["thing_id"],
        "stream": dead["stream"],
        "template_id": dead["template_id"],
        "idempotency_key": None,
        "content_type": "application/json",
        "body": dead["original"],
    }


def _dead_letters(bootstrap: str, topic: str, max_message_bytes: int, timeout: float) -> list[dict]:
    """Every decodable dead letter on `topic`, read to its end as of the start."""
    messages: list = []
    tail = TopicTail(bootstrap, topic, messages.append, name=f"replay-{secrets.token_hex(4)}",
                     config={"max.partition.fetch.bytes": max_message_bytes})
    tail.start()
    try:
        if not tail.wait_ready(timeout):
            raise ReplayError(f"could not read {topic} to its end within {timeout:.0f}s")
    finally:
        tail.stop()
    dead_letters = []
    for message in messages:
        try:
            dead_letters.append(schemas.decode(schemas.DEAD_LETTER, message.value()))
        except schemas.SchemaMismatch as exc:
            log.warning("skipping %s[%d]@%d: %s", topic, message.partition(), message.offset(), exc)
    return dead_letters


def _produce(bootstrap: str, topic: str, envelopes: list[dict], max_message_bytes: int, timeout: float) -> None:
    """Produce every envelope (keyed like the edge does, by thing) and wait for all acks.

    A dead letter keeps its whole body, so its envelope is no larger than the
    edge's was and fits the raw topic's `max_message_bytes`.
    """
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "message.max.bytes": max_message_bytes,
        "acks": "all",
        "enable.idempotence": True,
        "delivery.timeout.ms": int(timeout * 1000),
    })
    failures: list[str] = []
    delivered = 0

    def on_delivery(error, message) -> None:
        nonlocal delivered
        if error is not None:
            failures.append(str(error))
        else:
            delivered += 1

    for envelope in envelopes:
        # Keyed by its target as the edge keys it, so it shares the partition (and the order) of
        # the target's other requests: a data source's schema is decided by one processor.
        key = Target(envelope["route"], envelope["thing_id"], envelope["stream"], envelope["template_id"]).partition_key
        value = schemas.encode(schemas.RAW_ENVELOPE, envelope)
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.5)  # local queue full: let deliveries drain
    remaining = producer.flush(timeout + 5)
    if failures or remaining or delivered != len(envelopes):
        raise ReplayError(f"{delivered} of {len(envelopes)} envelopes delivered to {topic}; "
                          f"{remaining} still queued; errors: {failures[:5]}")
