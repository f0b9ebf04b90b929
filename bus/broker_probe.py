"""Is the broker reachable? Asked once a second, answered as a health component.

Consumer loops cannot tell "broker gone" from "nothing to read", so readiness
gets the answer from a cheap metadata request of its own.
"""

from __future__ import annotations

import threading

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from bus.health import Health
from bus.logs import librdkafka_logger


class BrokerProbe:
    def __init__(self, bootstrap: str, health: Health, interval: float = 1.0, timeout: float = 2.0) -> None:
        self._admin = AdminClient({"bootstrap.servers": bootstrap, "logger": librdkafka_logger()})
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

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._admin.list_topics(timeout=self._timeout)
                self._component.ok()
            except KafkaException as exc:
                self._component.failing(f"unreachable: {exc.args[0].str() if exc.args else exc}")
            self._stop.wait(self._interval)
