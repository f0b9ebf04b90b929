"""Is the broker reachable? Asked once a second, answered as a health component.

Consumer loops cannot tell "broker gone" from "nothing to read", so readiness
gets the answer from a cheap metadata request of its own. A lost broker is
reported at once, not at the next request's timeout: between requests the probe
serves its client's events, and librdkafka says "all brokers down" as soon as
their connections drop.
"""

from __future__ import annotations

import threading
import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from bus.health import Health
from bus.logs import librdkafka_logger


class BrokerProbe:
    def __init__(self, bootstrap: str, health: Health, interval: float = 1.0, timeout: float = 2.0) -> None:
        self._admin = AdminClient({"bootstrap.servers": bootstrap, "logger": librdkafka_logger(),
                                   "error_cb": self._on_error})
        self._component = health.component("broker", stall_after=30 + timeout)
        self._interval, self._timeout = interval, timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="broker-probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._timeout + 1)
        self._component.stopped()

    def _on_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self._component.failing(f"unreachable: {error.str()}")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._admin.list_topics(timeout=self._timeout)
                self._component.ok()
            except KafkaException as exc:
                self._component.failing(f"unreachable: {exc.args[0].str() if exc.args else exc}")
            deadline = time.monotonic() + self._interval
            while not self._stop.is_set() and time.monotonic() < deadline:
                self._admin.poll(0.1)  # serves _on_error
