"""Idempotency-Key memory for the processors: the first verdict per (org, key).

Backed by the compacted `idempotency` topic, so it survives restarts and is
shared by every processor instance. Raw messages with an Idempotency-Key are
keyed by it, so all repeats of one key reach the partition owner in order;
that owner records the first verdict locally at once and on the topic before
the batch commits.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

import schemas
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
        self._topic = topic
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": "sluice-idempotency-view",  # nothing is committed
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        })
        self._first: dict[str, dict] = {}
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idempotency-view", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wait_ready(self, timeout: float) -> bool:
        """Block until the topic has been read to its end as of start."""
        return self._ready.wait(timeout)

    def first(self, key: str, received_at: int) -> dict | None:
        """The first verdict for `key` if it is within the window of `received_at`."""
        verdict = self._first.get(key)
        if verdict is None or received_at - verdict["received_at"] > IDEMPOTENCY_WINDOW_MS:
            return None
        return verdict

    def remember(self, key: str, verdict: dict) -> None:
        """Record `verdict` as the first for `key` (called when `first` found none)."""
        self._first[key] = verdict

    def _run(self) -> None:
        metadata = self._consumer.list_topics(self._topic, timeout=30)
        partitions = [TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in metadata.topics[self._topic].partitions]
        remaining = {}
        for tp in partitions:
            low, high = self._consumer.get_watermark_offsets(tp, timeout=30)
            if high > low:
                remaining[tp.partition] = high - 1
        self._consumer.assign(partitions)
        if not remaining:
            self._ready.set()
        try:
            while not self._stop.is_set():
                for message in self._consumer.consume(1000, timeout=0.2):
                    if message.error():
                        if message.error().code() != KafkaError._PARTITION_EOF:
                            log.error("idempotency view: %s", message.error())
                        continue
                    self._apply(message.key(), message.value())
                    if remaining.get(message.partition(), -1) <= message.offset():
                        remaining.pop(message.partition(), None)
                        if not remaining:
                            self._ready.set()
        finally:
            self._consumer.close()

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if not key:
            return
        if value is None:
            self._first.pop(key.decode(), None)
            return
        try:
            self._first[key.decode()] = schemas.decode(schemas.VERDICT, value)
        except schemas.SchemaMismatch as exc:
            log.error("idempotency view: unreadable record: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
