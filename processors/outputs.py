"""The agent's outputs, produced through librdkafka instead of Faust's own producer.

Why: with Faust's producer (aiokafka), batching, framing and socket writes run in
Python on the agent's event loop, a third of the processor's time in the profile;
librdkafka does that work on its own threads. Faust still consumes, runs the
agent and commits.

The shape follows Faust's topics, so the agent's loop does not change: `send()`
queues a message and returns an awaitable that completes when every message
queued so far is acknowledged by the broker (acks=all, idempotent producer), or
raises if one of them failed for good. The agent awaits them before its batch
ends, so offsets are committed only after the outputs are durable.

Once a batch's outputs are all queued, waiting out linger.ms only delays the
acks the agent waits for (a sync reply's verdict among them): `acked()` has a
thread flush first (`send_now()`), and librdkafka sends without lingering while
a flush is in progress. The batch's messages still go together: they were
queued at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from bus.logs import librdkafka_logger

log = logging.getLogger(__name__)


# A flush outlasting this (a broker down) ends; the next send_now() flushes again.
FLUSH_TIMEOUT_S = 5.0


class OutputProducer:
    """One idempotent producer shared by the agent's output topics.

    Use from one event loop; a thread serves librdkafka's delivery reports.
    """

    def __init__(self, bootstrap: str, max_message_bytes: int, client_id: str = "processor") -> None:
        self._config = {
            "bootstrap.servers": bootstrap,
            "client.id": client_id,
            "acks": "all",
            "enable.idempotence": True,
            "message.max.bytes": max_message_bytes,
            # Chosen by measurement (BENCHMARKS.md): a batch of raw requests produces its outputs in one
            # burst and then waits for them all, so a short linger fills large produce requests.
            "linger.ms": 5,
            "batch.size": max(max_message_bytes, 1_000_000),
            # The frames are most of the bytes the brokers store and replicate (BENCHMARKS.md, "Scale
            # beyond one machine"); lz4 shrinks them several times for little CPU, as on the raw topic.
            "compression.type": "lz4",
            # A lone verdict (a sync reply waits for it) must not sit out Nagle's delay as a small write.
            "socket.nagle.disable": True,
            "logger": librdkafka_logger(),
        }
        self._producer: Producer | None = None  # started at the first send: an app built for a test needs none
        self._lock = threading.Lock()
        self._outstanding = 0
        self._acked: asyncio.Future | None = None  # completes when _outstanding returns to 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="processor-outputs", daemon=True)
        self._flush = threading.Event()
        self._flusher = threading.Thread(target=self._flush_when_asked, name="processor-outputs-flush",
                                         daemon=True)

    def topic(self, name: str) -> "OutputTopic":
        return OutputTopic(self, name)

    async def send(self, topic: str, key: bytes, value: bytes) -> asyncio.Future:
        """Queue one message; the returned future completes once it and every earlier one
        are acknowledged, and raises KafkaException if any of them failed. Waits (without
        blocking the loop) while librdkafka's queue is full."""
        if self._producer is None:
            self._producer = Producer(self._config)
            self._thread.start()
            self._flusher.start()
        with self._lock:
            if self._acked is None:
                self._loop = asyncio.get_running_loop()
                self._acked = self._loop.create_future()
            acked = self._acked
            self._outstanding += 1
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=self._delivered)
                return acked
            except BufferError:
                await asyncio.sleep(0.005)
            except BaseException:
                self._delivered(KafkaError(KafkaError._FAIL, "produce refused the message"), None)
                raise

    def send_now(self) -> None:
        """Send everything queued without waiting out linger.ms; returns at once."""
        if self._producer is not None:
            self._flush.set()

    async def acked(self, pending: list) -> None:
        """Wait for the awaitables `send()` returned, sending what is queued at once: a caller
        waiting for acks gains nothing from linger.ms."""
        self.send_now()
        await asyncio.gather(*pending)

    def _delivered(self, error: KafkaError | None, message: Message | None) -> None:
        # Runs on the delivery thread (or in send() when produce itself refused the message).
        with self._lock:
            self._outstanding -= 1
            acked, loop = self._acked, self._loop
            if acked is None:
                return
            if error is not None:
                outcome = (_fail, acked, KafkaException(error))
            elif self._outstanding == 0:
                outcome = (_succeed, acked)
            else:
                return
            if self._outstanding == 0:
                self._acked = None  # else later sends join this (maybe failed) one: the agent exits on a failure
        try:
            loop.call_soon_threadsafe(*outcome)
        except RuntimeError:
            pass  # the loop is closed: nobody waits any more

    def _serve(self) -> None:
        # Delivery reports are served here; if this loop ended, the agent would wait for acks forever.
        while not self._stop.is_set():
            try:
                self._producer.poll(0.1)
            except Exception:
                log.exception("serving the output producer's delivery reports failed; continuing")

    def _flush_when_asked(self) -> None:
        # flush() returns once the queue is empty: everything delivered or failed, its reports served.
        while True:
            self._flush.wait()
            if self._stop.is_set():
                return
            self._flush.clear()  # before flushing: a request meanwhile flushes again
            try:
                self._producer.flush(FLUSH_TIMEOUT_S)
            except Exception:
                log.exception("flushing the output producer failed; continuing")

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (blocks up to `timeout` s), then stop the delivery thread."""
        if self._producer is None:
            return
        remaining = self._producer.flush(timeout)
        if remaining:
            log.warning("%d output messages were not delivered at close", remaining)
        self._stop.set()
        self._flush.set()
        self._thread.join(timeout)
        self._flusher.join(timeout)


class OutputTopic:
    """One output topic, sent to as a Faust topic is: `await (await topic.send(key=, value=))`."""

    def __init__(self, producer: OutputProducer, name: str) -> None:
        self._producer = producer
        self.name = name

    async def send(self, *, key: bytes, value: bytes) -> asyncio.Future:
        return await self._producer.send(self.name, key, value)


def _succeed(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def _fail(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
