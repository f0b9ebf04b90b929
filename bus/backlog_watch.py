"""The edge's view of the work waiting behind it, in seconds of drain, refreshed in the background.

Every `interval` seconds a thread reads the committed offsets and high watermarks of the
pipeline's consumer groups (the processors' `{prefix}processors` on raw and ingest, and each
sink's `{prefix}sink-…`; bus.lag) and turns them into seconds of drain per stage
(bus.drain). The request path only reads the last view (`current()`), never the broker.

A broker that does not answer leaves the last view in place; `current()` gives it only while
it is younger than `stale_after` seconds, then None: whoever reads it (the edge's admission)
admits. So an outage never sheds everything for good, and the broker's own absence is
answered by the produce path (503 within 10 s) anyway.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from bus import metrics
from bus.drain import Drain, DrainEstimate, Sample
from bus.lag import LagCollector

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backlog:
    """The stage furthest behind, at one refresh."""

    stage: str  # its consumer group
    drain: Drain
    taken_at: float  # monotonic seconds

    @property
    def seconds(self) -> float:
        return self.drain.seconds


def worst(stages: dict[str, Drain], taken_at: float) -> Backlog:
    """The stage with the most seconds of drain waiting (none waiting: an empty stage name)."""
    if not stages:
        return Backlog("", Drain(0, 0.0, 0.0), taken_at)
    stage = max(sorted(stages), key=lambda group: stages[group].seconds)
    return Backlog(stage, stages[stage], taken_at)


class BacklogWatch:
    def __init__(self, bootstrap: str, topic_prefix: str, groups: tuple[str, ...], interval: float = 1.0,
                 stale_after: float = 10.0, timeout: float = 2.0) -> None:
        """Watch the consumer groups whose names start with one of `groups`, on the topics of `topic_prefix`."""
        self._lag = LagCollector(bootstrap, topic_prefix, timeout=timeout)
        self._groups = groups
        self._interval, self._stale_after = interval, stale_after
        self._estimates: dict[str, DrainEstimate] = {}
        self._last: Backlog | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backlog-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def current(self) -> Backlog | None:
        """The last view, or None when there is none younger than `stale_after` seconds. Never blocks."""
        last = self._last
        if last is None or time.monotonic() - last.taken_at > self._stale_after:
            return None
        return last

    def refresh(self) -> Backlog:
        """Read the groups' offsets once and update the view. Blocks on the broker (bounded by its timeout);
        may raise a KafkaException."""
        sums: dict[str, list[int]] = {}
        for (group, _, _), (at, high) in self._lag.positions().items():
            if group.startswith(self._groups):
                total = sums.setdefault(group, [0, 0])
                total[0] += at
                total[1] += high
        now = time.monotonic()
        stages = {group: self._estimates.setdefault(group, DrainEstimate()).add(Sample(now, at, high))
                  for group, (at, high) in sums.items()}
        for group, drain in stages.items():
            metrics.STAGE_BACKLOG.labels(group).set(drain.seconds)
        self._last = worst(stages, now)
        return self._last

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as exc:  # the broker away: keep the last view until it goes stale
                log.debug("backlog watch: refresh failed: %s", exc)
            self._stop.wait(self._interval)
