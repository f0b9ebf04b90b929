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

from confluent_kafka import ConsumerGroupState, KafkaException
from confluent_kafka.admin import AdminClient

from bus.health import Health
from bus.lag import LagCollector
from bus.logs import librdkafka_logger

log = logging.getLogger(__name__)

CHECK_REQUESTS = 6  # list groups twice, committed offsets, metadata, low and high watermarks


class ProcessorWatch:
    def __init__(self, bootstrap: str, group: str, topic_prefix: str, health: Health, interval: float = 2.0,
                 stall_after: float = 30.0, timeout: float = 5.0) -> None:
        self._admin = AdminClient({"bootstrap.servers": bootstrap, "logger": librdkafka_logger()})
        self._lag = LagCollector(bootstrap, group, timeout=timeout, topic_prefix=topic_prefix)
        self._group = group
        self._interval, self._stall_after, self._timeout = interval, stall_after, timeout
        # A check makes up to six admin requests, each waiting out `timeout` while a broker of a
        # cluster is away (before it is fenced): that is slow, not stalled.
        self._component = health.component("processor", stall_after=interval * 4 + timeout * (CHECK_REQUESTS + 2))
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
        # The group's state, not its description: librdkafka 2.16.0 aborts the process when the group's
        # coordinator broker dies during describe_consumer_groups (bus.lag says more); listing asks every
        # broker, no coordinator. A group without members is EMPTY (or gone).
        listed = self._admin.list_consumer_groups(request_timeout=self._timeout).result()
        state = next((g.state for g in listed.valid if g.group_id == self._group), None)
        members = state not in (None, ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD)
        mine = [at_high for (group, _, _), at_high in self._lag.positions().items() if group == self._group]
        waiting = sum(max(0, high - at) for at, high in mine)
        resumes_at = sum(at for at, _ in mine)
        now = time.monotonic()
        if waiting == 0 or resumes_at != self._resumes_at:
            self._moved_at = now
        self._resumes_at = resumes_at
        if not members:
            return f"no processor in group {self._group}" + (f"; {waiting} requests waiting" if waiting else "")
        idle = now - self._moved_at
        if waiting and idle >= self._stall_after:
            return f"{waiting} requests waiting, none processed for {idle:.0f} s"
        return ""
