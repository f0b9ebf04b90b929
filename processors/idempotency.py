"""Idempotency-Key memory for the processors: the first verdict per key, and its request's
fingerprint.

A key is scoped to (org, API key, target): the holder of one API key names its
own retries, for one thing (or stream, or template). So two devices, or two
things, that happen to pick the same key never see each other's verdict nor lose
each other's data. A repeat with the same body answers the first verdict; with
another body it is refused (422 IDEMPOTENCY_KEY_REUSED) and never processed.

Backed by the compacted `idempotency` topic, so it survives restarts and is
shared by every processor instance. The edge keys raw messages by their target,
which the scope includes, so all repeats of one key reach the partition owner in
order; that owner records the first verdict locally at once and on the topic
before the batch commits.
"""

from __future__ import annotations

import hashlib
import logging
import time

from confluent_kafka import Message

import schemas
from bus.tail import TopicTail
from schemas.topics import IDEMPOTENCY_WINDOW_MS

log = logging.getLogger(__name__)

REUSED = "IDEMPOTENCY_KEY_REUSED"


def _target(envelope: dict) -> str:
    return "/".join(envelope.get(f) or "" for f in ("route", "thing_id", "stream", "template_id"))


def idempotency_id(envelope: dict) -> str | None:
    """The key repeats are recognised by, or None when the request has none."""
    key = envelope.get("idempotency_key")
    if not key:
        return None
    return f"{envelope['org_id']}/{envelope.get('key_id') or ''}/{_target(envelope)}/{key}"


def request_hash(envelope: dict) -> str:
    """The request's fingerprint: SHA-256 of its target and its body, byte for byte."""
    return hashlib.sha256(_target(envelope).encode() + b"\0" + envelope["body"]).hexdigest()


def first_verdict(verdict: dict, envelope: dict) -> dict:
    """What to remember of a first request: its verdict and its fingerprint."""
    return {**verdict, "request_hash": request_hash(envelope)}


def repeat_verdict(first: dict, envelope: dict) -> dict:
    """This request's verdict when it repeats `first`'s key: the first verdict for the same
    request, a 422 for another body (nothing reprocessed either way).

    A first verdict stored without a fingerprint (by an older version) is taken to match.
    """
    now = int(time.time() * 1000)
    if first.get("request_hash") not in (None, request_hash(envelope)):
        error = {"code": REUSED, "field": "Idempotency-Key", "message": (
            f"Idempotency-Key {envelope['idempotency_key']!r} was already used for request "
            f"{first['request_id']} with a different body; this request was not processed")}
        return {**first, "request_id": envelope["request_id"], "status": "rejected", "http_status": 422,
                "frames_received": 0, "frames_ingested": 0, "metrics": [], "errors": [error],
                "duplicate_of": None, "request_hash": None, "received_at": envelope["received_at"],
                "processed_at": now}
    return {**first, "request_id": envelope["request_id"], "duplicate_of": first["request_id"],
            "request_hash": None, "received_at": envelope["received_at"], "processed_at": now}


class IdempotencyStore:
    """First verdicts (with their request's fingerprint) by idempotency id, loaded from the topic at start."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._first: dict[str, dict] = {}
        self._tail = TopicTail(bootstrap, topic, self._on_message, name="idempotency-view")

    def start(self) -> None:
        self._tail.start()

    def wait_ready(self, timeout: float) -> bool:
        """Block until the topic has been read to its end as of start."""
        return self._tail.wait_ready(timeout)

    def stop(self) -> None:
        self._tail.stop()

    def first(self, key: str, received_at: int) -> dict | None:
        """The first verdict for `key` if it is within the window of `received_at`."""
        verdict = self._first.get(key)
        if verdict is None or received_at - verdict["received_at"] > IDEMPOTENCY_WINDOW_MS:
            return None
        return verdict

    def remember(self, key: str, first: dict) -> None:
        """Record `first` (see `first_verdict`) for `key`; called when `first()` found none."""
        self._first[key] = first

    def _on_message(self, message: Message) -> None:
        key, value = message.key(), message.value()
        if not key:
            return
        if value is None:
            self._first.pop(key.decode(), None)
            return
        try:
            self._first[key.decode()] = schemas.decode(schemas.VERDICT, value)
        except schemas.SchemaMismatch as exc:
            log.error("idempotency view: unreadable record: %s", exc)
