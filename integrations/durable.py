"""The stage's producer: each message's callback runs once the broker holds it (acks=all,
idempotent), or once it failed.

Callbacks run on the producer's poll thread, in produce order within a partition: an MQTT
runner acknowledges its broker from there, in the order the messages arrived.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from confluent_kafka import KafkaError, Producer

from bus.logs import librdkafka_logger

log = logging.getLogger(__name__)

Delivered = Callable[[KafkaError | None], None]


class DurableProducer:
    def __init__(self, bootstrap: str, *, max_message_bytes: int, delivery_timeout_ms: int = 30_000) -> None:
        self._producer = Producer({
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 2,
            "compression.type": "lz4",
            "message.max.bytes": max_message_bytes,
            "delivery.timeout.ms": delivery_timeout_ms,
            "logger": librdkafka_logger(),
        })
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="integrations-producer", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def send(self, topic: str, key: bytes, value: bytes | None, delivered: Delivered, partition: int = -1) -> None:
        """Produce; `delivered(None)` once durable, `delivered(error)` if not. Blocks while the
        local queue is full (backpressure on the source: an MQTT broker holds what it sent)."""
        while True:
            try:
                self._producer.produce(topic, key=key, value=value, partition=partition,
                                       on_delivery=lambda error, _message: delivered(error))
                return
            except BufferError:
                if self._stop.wait(0.05):
                    raise RuntimeError("the producer is closing") from None

    def send_and_wait(self, topic: str, key: bytes, value: bytes | None, timeout: float, partition: int = -1) -> None:
        """Produce and block until durable; raises RuntimeError when it is not within `timeout`."""
        done = threading.Event()
        outcome: list = []

        def delivered(error: KafkaError | None) -> None:
            outcome.append(error)
            done.set()

        self.send(topic, key, value, delivered, partition)
        if not done.wait(timeout):
            raise RuntimeError(f"not acknowledged by the broker within {timeout:g} s")
        if outcome[0] is not None:
            raise RuntimeError(f"the broker did not accept the message: {outcome[0]}")

    def close(self) -> None:
        self._producer.flush(10)
        self._stop.set()
        self._poller.join(timeout=2)
