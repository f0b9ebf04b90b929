"""Delivers processor verdicts from the results topic to requests waiting for them.

Each edge reads every partition of the results topic from its end as of start
(no consumer group: every edge must see every verdict, since any edge may hold
the waiting request). A waiter registers before its request is produced, so
its verdict cannot slip past.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from confluent_kafka import Consumer, KafkaError, TopicPartition

import schemas

log = logging.getLogger(__name__)


class ResultsListener:
    def __init__(self, bootstrap: str, topic: str) -> None:
        self._topic = topic
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": "sluice-edge-results",  # required by the client; nothing is committed
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "fetch.wait.max.ms": 10,  # verdicts are latency-critical for sync replies
        })
        self._waiters: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="results-listener", daemon=True)

    def start(self, timeout: float = 30) -> None:
        """Position at the end of every partition, then listen in a thread. Raises KafkaException."""
        metadata = self._consumer.list_topics(self._topic, timeout=timeout)
        partitions = []
        for partition in metadata.topics[self._topic].partitions:
            _, high = self._consumer.get_watermark_offsets(TopicPartition(self._topic, partition), timeout=timeout)
            partitions.append(TopicPartition(self._topic, partition, high))
        self._consumer.assign(partitions)
        self._thread.start()

    def expect(self, request_id: str) -> asyncio.Future:
        """A future resolved with the verdict dict for `request_id`; call before producing."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            self._waiters[request_id] = (loop, future)
        return future

    def forget(self, request_id: str) -> None:
        with self._lock:
            self._waiters.pop(request_id, None)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for message in self._consumer.consume(500, timeout=0.1):
                    if message.error():
                        if message.error().code() != KafkaError._PARTITION_EOF:
                            log.error("results listener: %s", message.error())
                        continue
                    self._deliver(message.key(), message.value())
        finally:
            self._consumer.close()

    def _deliver(self, key: bytes | None, value: bytes) -> None:
        if not key:
            return
        with self._lock:
            waiter = self._waiters.pop(key.decode(), None)
        if waiter is None:
            return  # nobody waits here: another edge's request, or an async one
        try:
            verdict = schemas.decode(schemas.VERDICT, value)
        except schemas.SchemaMismatch as exc:
            log.error("results listener: unreadable verdict: %s", exc)
            return
        loop, future = waiter
        loop.call_soon_threadsafe(_resolve, future, verdict)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _resolve(future: asyncio.Future, verdict: dict) -> None:
    if not future.done():
        future.set_result(verdict)
