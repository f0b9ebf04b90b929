"""Is a processor taking the raw requests? Asked every few seconds by the edge, answered
as its `processor` health component, so /readyz fails while nothing would judge what
the edge accepts (a sync request would time out, an async one wait unseen).

Read from Kafka alone, so it holds for any deployment shape: the processors' consumer
group has no member (all dead: a crashed member leaves it after its 10 s session
timeout), or requests wait in front of it and its committed offsets have not moved
for `stall_after` seconds (alive but wedged). A broker that does not answer changes
nothing here: the broker probe reports that.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from bus.health import Health
from bus.lag import LagCollector
from bus.logs import librdkafka_logger

log = logging.getLogger(__name__)


class ProcessorWatch:
    def __init__(self, bootstrap: str, group: str, health: Health, interval: float = 2.0,
                 stall_after: float = 30.0, timeout: float = 5.0) -> None:
        self._admin = AdminClient({"bootstrap.servers": bootstrap, "logger": librdkafka_logger()})
        self._lag = LagCollector(bootstrap, group, timeout=timeout)
        self._group = group
        self._interval, self._stall_after, self._timeout = interval, stall_after, timeout
        self._component = health.component("processor", stall_after=interval * 4 + timeout * 4)
        self._resumes_at: int | None = None  # the sum of the group's committed offsets at the last check
        self._moved_at = time.monotonic()  # when they last moved (or nothing was waiting)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="processor-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._timeout * 3)
        self._component.stopped()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                verdict = self.check()
                if verdict:
                    self._component.failing(verdict)
                else:
                    self._component.ok()
            except KafkaException:
                self._component.beat()  # the broker probe says what is wrong
            except Exception:
                log.exception("processor watch: unexpected error")
                self._component.beat()
            self._stop.wait(self._interval)

    def check(self) -> str:
        """'' when a processor is taking the requests, else what is wrong. May raise KafkaException."""
        described = self._admin.describe_consumer_groups([self._group], request_timeout=self._timeout)
        members = len(described[self._group].result().members)
        mine = [at_high for (group, _, _), at_high in self._lag.positions().items() if group == self._group]
        waiting = sum(max(0, high - at) for at, high in mine)
        resumes_at = sum(at for at, _ in mine)
        now = time.monotonic()
        if waiting == 0 or resumes_at != self._resumes_at:
            self._moved_at = now
        self._resumes_at = resumes_at
        if members == 0:
            return f"no processor in group {self._group}" + (f"; {waiting} requests waiting" if waiting else "")
        idle = now - self._moved_at
        if waiting and idle >= self._stall_after:
            return f"{waiting} requests waiting, none processed for {idle:.0f} s"
        return ""
