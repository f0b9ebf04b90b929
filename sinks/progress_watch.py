"""Is a sink's consumer turning without working? Messages waiting in its partitions, none consumed.

That is what a partition left paused looks like: the loop beats, readiness would stay
green, and nothing flows. The watch fails the sink's health component while it sees it,
and marks it dead (the service restarts) once that lasts past the stall limit.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, KafkaException

from bus.health import Component

log = logging.getLogger(__name__)


class ProgressWatch:
    def __init__(self, name: str, health: Component, every: float = 10.0) -> None:
        self.name = name
        self._health = health
        self._every = every
        self._progress_at = time.monotonic()
        self._lag_check_at = 0.0
        self._waiting_since: float | None = None  # when a check first found messages waiting
        self.stuck = ""  # why the consumer looks stuck, while it does

    def progressed(self) -> None:
        """Messages were consumed, partitions assigned, or the loop waits for a known reason."""
        self._progress_at, self.stuck = time.monotonic(), ""

    def reset(self) -> None:
        self._progress_at, self._waiting_since, self.stuck = time.monotonic(), None, ""

    def check(self, consumer: Consumer) -> None:
        """Every `every` s once idle that long: are messages waiting that we do not consume?

        Two checks in a row must find them, with nothing consumed between, so a message that
        arrives just before a check is not taken for a stuck loop. Asks the broker, so it
        blocks up to a few seconds; raises nothing.
        """
        now = time.monotonic()
        if now - self._progress_at < self._every:
            self.stuck = ""
            return
        if now < self._lag_check_at:
            return
        self._lag_check_at = now + self._every
        try:
            waiting = _waiting(consumer)
        except KafkaException:
            return  # the broker is away: the broker probe reports that
        if not waiting:
            self._progress_at, self.stuck, self._waiting_since = now, "", None
            return
        if self._waiting_since is None or self._waiting_since < self._progress_at:
            # Seen once: it may have just arrived, a fetch away from being consumed. Only if the
            # next check still finds messages and nothing consumed since is the loop stuck.
            self._waiting_since = now
            return
        idle = now - self._progress_at
        self.stuck = f"{waiting} messages waiting, none consumed for {idle:.0f} s"
        log.error("%s: %s", self.name, self.stuck)
        if idle > self._health.stall_after:
            self._health.dead(self.stuck)


def _waiting(consumer: Consumer) -> int:
    """Messages between each assigned partition's position (else its committed offset) and its end."""
    assigned = consumer.assignment()
    if not assigned:
        return 0
    positions = consumer.position(assigned)
    committed = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(assigned, timeout=5)}
    waiting = 0
    for tp in positions:
        low, high = consumer.get_watermark_offsets(tp, timeout=5)
        at = tp.offset if tp.offset >= 0 else committed.get((tp.topic, tp.partition), -1)
        waiting += max(0, high - (at if at >= 0 else low))
    return waiting
