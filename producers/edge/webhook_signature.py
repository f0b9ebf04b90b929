"""The webhook signature: `X-Sluice-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`.

Pure: `verify` takes the clock as an argument. A header may carry several `v1` entries
(a sender rotating its secret signs with both); one matching is enough. The time `t` is
signed with the body, so a captured request cannot be re-sent with a fresh time; one
re-sent as it was is refused once `t` is older than the tolerance, and, within it, by
`SeenSignatures`.

A replay must be refused by every edge, also after a restart: an accepted request carries
`replay_key(t, v1)` as its Idempotency-Key, so the processors' idempotency store (durable,
shared) never processes its replay, and each edge follows that store to answer the replay
401 (producers.edge.webhook_replays).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from collections import OrderedDict

HEADER = "X-Sluice-Signature"
MAX_HEADER_CHARS = 1024
_TIME = re.compile(r"[0-9]{1,12}\Z")
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
REPLAY_KEY_PREFIX = "webhook-signature:"


class BadSignature(ValueError):
    """Why a signature is refused: `reason` is malformed, stale or mismatch."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex v1 signature of `body` sent at `timestamp`."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def header_value(secret: str, timestamp: int, body: bytes) -> str:
    """The whole header a sender sends (what the docs compute with openssl)."""
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def replay_key(timestamp: int, v1: str) -> str:
    """The Idempotency-Key of an accepted signed request: the same for its every replay."""
    return f"{REPLAY_KEY_PREFIX}{timestamp}:{v1}"


def parse_replay_key(key: str) -> tuple[int, str] | None:
    """(t, v1) of a `replay_key`, or None for any other key."""
    if not key.startswith(REPLAY_KEY_PREFIX):
        return None
    timestamp, _, v1 = key[len(REPLAY_KEY_PREFIX):].partition(":")
    if not _TIME.match(timestamp) or not _HEX_SHA256.match(v1):
        return None
    return int(timestamp), v1


def verify(header: str | None, secret: str, body: bytes, now: float, tolerance_s: float) -> tuple[int, str]:
    """(t, the matching v1) of a valid header; raises BadSignature otherwise.

    Stale: `t` more than `tolerance_s` away from `now`, in either direction (a sender's
    clock may run ahead a little; one far ahead would make its requests replayable for long).
    """
    if not header or len(header) > MAX_HEADER_CHARS:
        raise BadSignature("malformed", f"missing or oversized {HEADER} header")
    timestamp, candidates = None, []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise BadSignature("malformed", f"{HEADER}: {part.strip()[:40]!r} is not name=value")
        if name == "t":
            if timestamp is not None or not _TIME.match(value):
                raise BadSignature("malformed", f"{HEADER}: t must be one time in unix seconds")
            timestamp = int(value)
        elif name == "v1":
            if not _HEX_SHA256.match(value):
                raise BadSignature("malformed", f"{HEADER}: v1 must be 64 lowercase hex digits")
            candidates.append(value)
        # Other schemes (v0, a future v2) are ignored: a newer sender may add them.
    if timestamp is None or not candidates:
        raise BadSignature("malformed", f"{HEADER} needs t=<unix seconds> and v1=<hex HMAC-SHA256>")
    if abs(now - timestamp) > tolerance_s:
        raise BadSignature("stale", f"{HEADER}: t is {now - timestamp:.0f} s from now; the tolerance is "
                           f"{tolerance_s:g} s")
    expected = signature(secret, timestamp, body)
    for candidate in candidates:
        if hmac.compare_digest(candidate, expected):
            return timestamp, candidate
    raise BadSignature("mismatch", f"{HEADER}: no v1 matches this body and the integration's secret")


class SeenSignatures:
    """Signatures accepted within the tolerance window, so the same request sent again is refused.

    Two sources: this edge's own acceptances (`first_time`, at once) and every edge's, as the
    processors recorded them durably (`remember`, fed by producers.edge.webhook_replays).
    Bounded: past `capacity` the oldest are forgotten first (then a replay of one of them, still
    inside its window, is accepted here and not processed by the processors, whose memory is 24 h).
    Thread-safe: the edge's event loop and the idempotency tail's thread both call it.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()  # (integration, v1) -> forget at
        self._capacity = capacity
        self._lock = threading.Lock()

    def first_time(self, integration_id: str, v1: str, timestamp: int, now: float, tolerance_s: float) -> bool:
        """Record the signature; False if it was recorded before and is not yet forgotten."""
        with self._lock:
            while self._seen and next(iter(self._seen.values())) < now:
                self._seen.popitem(last=False)
            key = (integration_id, v1)
            if key in self._seen:
                return False
            # Past t + tolerance the time check refuses it by itself.
            self._put(key, max(now, timestamp + tolerance_s))
            return True

    def remember(self, integration_id: str, v1: str, forget_at: float) -> None:
        """A signature some edge accepted: refuse it here too until `forget_at`."""
        with self._lock:
            self._put((integration_id, v1), forget_at)

    def forget(self, integration_id: str, v1: str) -> None:
        """The request it signed was not accepted after all: the sender may send it again."""
        with self._lock:
            self._seen.pop((integration_id, v1), None)

    def _put(self, key: tuple[str, str], forget_at: float) -> None:
        # Kept in insertion order, which is about the order they expire in (the first loop above).
        self._seen[key] = max(forget_at, self._seen.pop(key, forget_at))
        while len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
