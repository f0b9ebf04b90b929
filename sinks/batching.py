"""A Kafka → warehouse consumer loop: batch by rows and time, insert, then commit.

The order is the guarantee: offsets are committed only after the warehouse
accepted the insert. A crash in between replays the batch; the insert carries a
deduplication token built from the batch's offset ranges, and the readings
table is a ReplacingMergeTree keyed by (org, thing, metric, ts), so a replay
never shows up as duplicate readings.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Callable

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

log = logging.getLogger(__name__)

# Decodes one batch of message values and inserts it; gets the dedup token. May raise.
InsertBatch = Callable[[list[bytes], str], int]


class BatchingSink:
    """Consumes `topic` in group `group`, calling `insert` per batch of messages.

    `run()` blocks until `stop()`; an insert that fails is retried with
    backoff (the consumer keeps its session alive by pausing its partitions),
    so a warehouse outage delays data but never drops it.
    """

    def __init__(self, bootstrap: str, group: str, topic: str, insert: InsertBatch,
                 max_messages: int, max_bytes: int, max_ms: int, name: str = "sink") -> None:
        self._topic = topic
        self._insert = insert
        self._max_messages = max(1, max_messages)
        self._max_bytes = max_bytes
        self._max_seconds = max_ms / 1000
        self.name = name
        self._stop = threading.Event()
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "fetch.max.bytes": 64 * 1024 * 1024,
            # A crashed owner (no LeaveGroup) blocks its partitions this long; default is 45 s.
            "session.timeout.ms": 10_000,
        })
        self.rows_inserted = 0
        self.ready = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        self._consumer.subscribe([self._topic], on_assign=lambda c, p: self.ready.set())
        try:
            while not self._stop.is_set():
                batch = self._collect()
                if batch:
                    self._deliver(batch)
        finally:
            self._consumer.close()

    def _collect(self) -> list[Message]:
        batch: list[Message] = []
        size = 0
        deadline = time.monotonic() + self._max_seconds
        while len(batch) < self._max_messages and size < self._max_bytes and not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for message in self._consumer.consume(min(10_000, self._max_messages - len(batch)),
                                                   timeout=min(remaining, 0.2)):
                error = message.error()
                if error is None:
                    batch.append(message)
                    size += len(message.value() or b"")
                elif error.code() != KafkaError._PARTITION_EOF:
                    log.error("%s: consume error: %s", self.name, error)
            if not batch:
                deadline = time.monotonic() + self._max_seconds  # idle: start the clock at the first message
        return batch

    def _deliver(self, batch: list[Message]) -> None:
        token = _dedup_token(batch)
        delay = 0.2
        while True:
            try:
                self.rows_inserted += self._insert([m.value() for m in batch], token)
                break
            except Exception:
                log.exception("%s: insert failed; retrying in %.1fs", self.name, delay)
                self._pause_and_wait(delay)
                if self._stop.is_set():
                    return  # not committed: the next owner of these partitions replays them
                delay = min(delay * 2, 10.0)
        self._consumer.commit(offsets=_next_offsets(batch), asynchronous=False)

    def _pause_and_wait(self, seconds: float) -> None:
        # Keep polling while paused so the group does not evict us during a long outage.
        assignment = self._consumer.assignment()
        self._consumer.pause(assignment)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self._stop.is_set():
            self._consumer.poll(0.1)
        self._consumer.resume(assignment)


def _next_offsets(batch: list[Message]) -> list[TopicPartition]:
    last: dict[tuple[str, int], int] = {}
    for m in batch:
        last[(m.topic(), m.partition())] = m.offset()
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


def _dedup_token(batch: list[Message]) -> str:
    """A token naming exactly which offsets the batch holds."""
    ranges: dict[tuple[str, int], list[int]] = {}
    for m in batch:
        span = ranges.setdefault((m.topic(), m.partition()), [m.offset(), m.offset()])
        span[1] = m.offset()
    text = ";".join(f"{t}:{p}:{a}-{b}" for (t, p), (a, b) in sorted(ranges.items()))
    return hashlib.sha256(text.encode()).hexdigest()
