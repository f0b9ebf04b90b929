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

from confluent_kafka import Message

import schemas
from bus.tail import TopicTail

log = logging.getLogger(__name__)


class ResultsListener:
    def __init__(self, bootstrap: str, topic: str) -> None:
        self._waiters: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future]] = {}
        self._lock = threading.Lock()
        # fetch.wait.max.ms: verdicts are latency-critical for sync replies.
        self._tail = TopicTail(bootstrap, topic, self._deliver, name="results-listener", from_beginning=False,
                               config={"fetch.wait.max.ms": 10})

    def start(self, timeout: float = 30) -> None:
        """Position at the end of every partition, then listen; blocks until positioned."""
        self._tail.start()
        if not self._tail.wait_ready(timeout):
            raise RuntimeError("the results listener could not position itself on the results topic")

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

    def _deliver(self, message: Message) -> None:
        key = message.key()
        if not key:
            return
        with self._lock:
            waiter = self._waiters.pop(key.decode(), None)
        if waiter is None:
            return  # nobody waits here: another edge's request, or an async one
        try:
            verdict = schemas.decode(schemas.VERDICT, message.value())
        except schemas.SchemaMismatch as exc:
            log.error("results listener: unreadable verdict: %s", exc)
            return
        loop, future = waiter
        loop.call_soon_threadsafe(_resolve, future, verdict)

    def stop(self) -> None:
        self._tail.stop()


def _resolve(future: asyncio.Future, verdict: dict) -> None:
    if not future.done():
        future.set_result(verdict)
