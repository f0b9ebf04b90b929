"""arroyo's `Commit` for a confluent-kafka consumer: the last step of a sink's chain calls it.

arroyo's CommitOffsets hands it a batch's offsets once the batch is inserted, and `{}`
on every poll. Offsets are staged and committed at once; a commit that fails while the
broker is away stays staged and is retried, with backoff, on later polls (the consumer
loop keeps turning meanwhile, so the group session lives), and a later batch's offsets
simply replace it. A commit refused because the partitions were revoked meanwhile is
dropped: the new owner replays the batch, which the warehouse absorbs (sinks.batches).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Mapping

from arroyo.types import Partition
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from bus import metrics
from bus.client_errors import raise_if_fatal

log = logging.getLogger(__name__)

# A commit refused with these means the group moved on without us: the partitions are someone else's.
REVOKED = {KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID, KafkaError.REBALANCE_IN_PROGRESS,
           KafkaError.FENCED_INSTANCE_ID, KafkaError._ASSIGNMENT_LOST, KafkaError._STATE}
MAX_BACKOFF_S = 10.0
FORCED_TRIES = 3  # a join's commit: the partitions are about to go, so a few tries now, then leave it


class Committer:
    """Commits staged offsets with `consumer`; calls `committed()` after each commit that took."""

    def __init__(self, name: str, consumer: Consumer, committed: Callable[[], None]) -> None:
        self.name = name
        self._consumer = consumer
        self._committed = committed
        self._staged: dict[Partition, int] = {}
        self._retry_at = 0.0
        self._delay = 0.2
        self.failing = ""  # why commits fail, while they do

    def __call__(self, offsets: Mapping[Partition, int], force: bool = False) -> None:
        """Blocks for the commit's round trip (sleeps between a forced commit's tries); raises
        FatalClientError when the consumer is dead."""
        self._staged.update(offsets)
        tries = FORCED_TRIES if force else 1
        for attempt in range(tries):
            if not self._staged or (not force and time.monotonic() < self._retry_at):
                return
            if self._commit():
                return
            if attempt + 1 < tries:
                time.sleep(min(self._delay, 1.0))
        if force and self._staged:
            log.warning("%s: offsets left uncommitted %s; their next reader replays them (deduplicated)",
                        self.name, self._staged)

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Drop staged offsets of partitions that are no longer ours."""
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._staged = {p: o for p, o in self._staged.items() if (p.topic.name, p.index) not in gone}

    def _commit(self) -> bool:
        offsets = [TopicPartition(p.topic.name, p.index, o) for p, o in self._staged.items()]
        started = time.monotonic()
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0]
            raise_if_fatal(error)
            if error.code() in REVOKED or not self._owns(offsets):
                log.warning("%s: commit refused (%s): the partitions moved on; their new owner replays "
                            "the batch (deduplicated)", self.name, error)
                self._done()
                return True
            log.warning("%s: commit failed (%s); retrying in %.1fs", self.name, error, self._delay)
            self.failing = f"commit failing: {error}"
            self._retry_at = time.monotonic() + self._delay
            self._delay = min(self._delay * 2, MAX_BACKOFF_S)
            return False
        metrics.COMMIT_DURATION.labels(self.name).observe(time.monotonic() - started)
        self._done()
        self._committed()
        return True

    def _done(self) -> None:
        self._staged.clear()
        self._delay, self._retry_at, self.failing = 0.2, 0.0, ""

    def _owns(self, offsets: list[TopicPartition]) -> bool:
        try:
            assigned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        except KafkaException:
            return True  # cannot tell: keep retrying
        return all((tp.topic, tp.partition) in assigned for tp in offsets)
