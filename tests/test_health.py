"""Readiness and log hygiene, without services: the health registry, the
watchdog that ends a service whose loop died, and the filter that keeps an
outage from flooding the logs."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

from bus.health import Health
from bus.logs import ALWAYS, RepeatFilter
from bus.watchdog import Watchdog
from tests.conftest import eventually


def test_readiness_names_the_unhealthy_component_and_a_dead_loop_is_fatal():
    health = Health()
    broker, sink = health.component("broker"), health.component("sink-readings")
    broker.ok()
    sink.ok()
    assert health.ready()[0]
    broker.failing("unreachable")
    ready, components = health.ready()
    assert not ready and components["broker"] == {"state": "failing", "ok": False, "fatal": False,
                                                  "reason": "unreachable"}
    assert health.fatal() == {}  # retrying is not fatal
    fired = threading.Event()
    watchdog = Watchdog(health, lambda reasons: fired.set(), interval=0.05)
    watchdog.start()
    sink.dead("KafkaException: commit failed")
    assert fired.wait(2) and "sink-readings" in watchdog.fired


def test_a_loop_that_stops_beating_is_stalled():
    health = Health()
    tail = health.component("catalog-view", stall_after=0.2)
    tail.ok()
    assert health.fatal() == {}
    time.sleep(0.3)
    assert health.fatal()["catalog-view"]["state"] == "stalled"
    tail.stopped()  # asked to stop: forgotten, not fatal
    assert health.snapshot() == {}


class Collected(logging.Handler):
    """A handler of the test's own: what other tests do to the root logger cannot reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_repeated_errors_are_collapsed_then_counted():
    logger = logging.getLogger("test.outage.collapsed")
    logger.propagate = False
    collected = Collected()
    collected.addFilter(RepeatFilter(window=1.0))
    logger.addHandler(collected)
    try:
        for attempt in range(200):
            logger.error("Connect to 127.0.0.1:9092 failed: Connection refused (after %dms)", attempt)
        logger.warning("restarted (pid 1)", extra=ALWAYS)
        logger.warning("restarted (pid 2)", extra=ALWAYS)
        time.sleep(1.2)  # past the window: the count is said, and the next one passes again
        logger.error("Connect to 127.0.0.1:9092 failed: Connection refused (after 3ms)")
    finally:
        logger.removeHandler(collected)
    messages = collected.messages
    assert messages[:3] == ["Connect to 127.0.0.1:9092 failed: Connection refused (after 0ms)",
                            "restarted (pid 1)", "restarted (pid 2)"]
    assert messages[3:] == [messages[3], "Connect to 127.0.0.1:9092 failed: Connection refused (after 3ms)"]
    assert messages[3].startswith("... 199 more like this in the last")
    assert messages[3].endswith("s: Connect to 127.0.0.1:9092 failed: Connection refused (after 0ms)")


def test_the_suppressed_count_is_said_even_when_the_errors_stop(caplog):
    logger = logging.getLogger("test.outage.over")
    caplog.handler.addFilter(RepeatFilter(window=0.2))
    try:
        for _ in range(5):
            logger.warning("commit failed; retrying")
        eventually(lambda: len(caplog.records) == 2, timeout=2, interval=0.05)
    finally:
        caplog.handler.filters.clear()
    assert caplog.records[1].getMessage().startswith("... 4 more like this")


def test_a_lost_broker_fails_readiness_within_a_second(tmp_path):
    """Was up to 3 s: the probe learnt it only when its next metadata request timed out."""
    from bus.broker_probe import BrokerProbe
    from sluice.local_kafka import LocalKafka
    from tests.kafka_fixture import free_http_and_kafka_ports

    _, port = free_http_and_kafka_ports()
    broker = LocalKafka(tmp_path, port=port)
    registry = Health()
    probe = BrokerProbe(broker.start(), registry)
    probe.start()
    try:
        eventually(lambda: registry.snapshot()["broker"]["ok"], timeout=20, interval=0.05)
        time.sleep(1.5)  # a few asks in: the probe's client holds its connections
        os.kill(broker.pid, signal.SIGKILL)
        killed = time.monotonic()
        eventually(lambda: not registry.snapshot()["broker"]["ok"], timeout=10, interval=0.02)
        noticed = time.monotonic() - killed
        assert noticed <= 1.0, f"readiness noticed the lost broker after {noticed:.2f} s"
        broker.stop()
        broker.start()
        eventually(lambda: registry.snapshot()["broker"]["ok"], timeout=30, interval=0.1)
    finally:
        probe.stop()
        broker.stop()
