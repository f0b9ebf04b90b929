"""How many seconds of work wait in front of one consumer group: its backlog ÷ its drain rate.

Pure arithmetic over successive samples of the group's committed offsets (summed over its
partitions) and its topics' high watermarks; bus.backlog_watch feeds it from the broker.

The drain rate is measured only over the time the group had work waiting: an idle stage
that meets a burst is not judged by the idle seconds before it. A stage that drained
nothing while work waited (stopped, wedged, or between commits) counts the seconds since
it last moved, so a stopped stage climbs past any bound, while one between two commits
(the processor commits every second, a sink after each insert) stays well under it.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

WINDOW_S = 10.0  # the drain rate is measured over the samples of this many seconds


@dataclass(frozen=True)
class Sample:
    at: float  # monotonic seconds
    resumes_at: int  # the sum of the group's committed offsets
    high: int  # the sum of the high watermarks of its partitions

    @property
    def backlog(self) -> int:
        return max(0, self.high - self.resumes_at)


@dataclass(frozen=True)
class Drain:
    """One stage's state at the last sample."""

    backlog: int  # messages waiting
    rate: float  # messages drained per second while work waited; 0 when not measured yet or stalled
    seconds: float  # the backlog in seconds of drain, and at least the time since the stage last moved


class DrainEstimate:
    """The backlog of one consumer group in seconds of drain, from its successive samples."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self._window_s = window_s
        self._samples: collections.deque[Sample] = collections.deque()
        self._moved_at: float | None = None  # the last sample with nothing waiting, or with offsets moved on

    def add(self, sample: Sample) -> Drain:
        """Record `sample` (taken after the previous one) and answer the stage's state at it."""
        last = self._samples[-1] if self._samples else None
        if last is None or sample.backlog == 0 or sample.resumes_at > last.resumes_at:
            self._moved_at = sample.at
        self._samples.append(sample)
        # Keep one sample older than the window: the start of its first interval.
        while len(self._samples) > 2 and self._samples[1].at <= sample.at - self._window_s:
            self._samples.popleft()
        return self.state()

    def state(self) -> Drain:
        if not self._samples:
            return Drain(0, 0.0, 0.0)
        latest = self._samples[-1]
        drained, busy = 0, 0.0
        for before, after in zip(self._samples, list(self._samples)[1:]):
            if before.backlog:
                drained += max(0, after.resumes_at - before.resumes_at)
                busy += after.at - before.at
        rate = drained / busy if busy else 0.0
        if latest.backlog == 0:
            return Drain(0, rate, 0.0)
        still_for = latest.at - (latest.at if self._moved_at is None else self._moved_at)
        return Drain(latest.backlog, rate, max(still_for, latest.backlog / rate if rate else 0.0))
