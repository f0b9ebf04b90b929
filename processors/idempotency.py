"""Idempotency-Key memory for the processors: the first verdict per (org, key).

Backed by the compacted `idempotency` topic, so it survives restarts and is
shared by every processor instance. Raw messages with an Idempotency-Key are
keyed by it, so all repeats of one key reach the partition owner in order;
that owner records the first verdict locally at once and on the topic before
the batch commits.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import Message

import schemas
from bus.tail import TopicTail
from schemas.topics import IDEMPOTENCY_WINDOW_MS

log = logging.getLogger(__name__)


def idempotency_id(envelope: dict) -> str | None:
    """The key repeats are recognised by, or None when the request has none."""
    key = envelope.get("idempotency_key")
    return f"{envelope['org_id']}/{key}" if key else None


def repeat_verdict(first: dict, envelope: dict) -> dict:
    """This request's verdict when it repeats `first`: the same outcome, nothing reprocessed."""
    return {**first, "request_id": envelope["request_id"], "duplicate_of": first["request_id"],
            "received_at": envelope["received_at"], "processed_at": int(time.time() * 1000)}


class IdempotencyStore:
    """First verdicts by idempotency id, loaded from the topic at start."""

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

    def remember(self, key: str, verdict: dict) -> None:
        """Record `verdict` as the first for `key` (called when `first` found none)."""
        self._first[key] = verdict

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
