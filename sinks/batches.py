"""The first step of a sink's chain: messages in, batches out, closed by count, bytes or time.

An arroyo `ProcessingStrategy` of ours where arroyo's `Reduce` does not fit: a batch
closes at whichever comes first of a message count, a byte size, and a time window
counted from when its first message was *written* (arroyo's clock starts when the step
first sees a message, so a backlog would wait a whole window per batch). Its `join`
drains the next step while that one is full (arroyo's `Buffer` only resubmits, so a
full insert queue would hold the last batch until the timeout).

A batch's dedup token names its offset ranges and nothing else: the same offsets give
the same token, so a retry of a batch is deduplicated by the warehouse's insert
deduplication. Batch boundaries are not reproducible (they depend on when messages
were written and fetched, and on where a revocation cut the batch), so a replay by
another consumer may cut them differently; every sink table is a ReplacingMergeTree
(or an idempotent aggregation) keyed so that such a replay overwrites instead of
duplicating (warehouse.ddl).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Optional

from arroyo.processing.strategies import MessageRejected, ProcessingStrategy
from arroyo.types import BrokerValue, Message, Partition, Value


@dataclass(frozen=True)
class Batch:
    values: list  # message values (bytes, or None for a tombstone), in offset order per partition
    token: str  # the insert's deduplication token (dedup_token)
    size: int  # bytes of the values


class _Open:
    """The batch being filled."""

    def __init__(self) -> None:
        self.values: list = []
        self.size = 0
        self.spans: dict[Partition, list[int]] = {}  # first and last offset per partition
        self.closes_at = math.inf  # on the monotonic clock
        self.timestamp: Optional[datetime] = None

    def add(self, value: BrokerValue, window_s: float) -> None:
        if not self.values:
            self.closes_at = window_end(value.timestamp, window_s)
        self.values.append(value.payload)
        self.size += len(value.payload or b"")
        span = self.spans.get(value.partition)
        if span is None:
            self.spans[value.partition] = [value.offset, value.offset]
        else:
            span[1] = value.offset
        self.timestamp = value.timestamp

    def message(self) -> Message[Batch]:
        batch = Batch(self.values, dedup_token(self.spans), self.size)
        committable = {partition: last + 1 for partition, (_, last) in self.spans.items()}
        return Message(Value(batch, committable, self.timestamp))


class Batcher(ProcessingStrategy[bytes]):
    """Collects message values into a `Batch` and submits it to `next_step` once it holds
    `max_messages` values or `max_bytes` bytes, or its window is over.

    `submit` raises MessageRejected (taking nothing) while a full batch waits for the
    next step to take it; `poll` never blocks; `join` blocks until the next step took the
    last batch and finished (it raises what the next step raises).
    """

    def __init__(self, max_messages: int, max_bytes: int, window_s: float,
                 next_step: ProcessingStrategy[Batch]) -> None:
        self._max_messages = max(1, max_messages)
        self._max_bytes = max_bytes
        self._window_s = window_s
        self._next = next_step
        self._open = _Open()
        self._closed = False

    def submit(self, message: Message[bytes]) -> None:
        assert not self._closed
        self._flush(force=False, timed=False)
        self._open.add(message.value, self._window_s)

    def poll(self) -> None:
        """Also closes a batch whose window is over: the consumer loop polls once what was
        already fetched is submitted, so a backlog's batch closes full, not at each message."""
        self._next.poll()  # first: an insert that finished makes room for a closed batch now
        try:
            self._flush(force=False, timed=True)
        except MessageRejected:
            pass  # the next step is busy: the batch waits

    def close(self) -> None:
        self._closed = True

    def terminate(self) -> None:
        self._closed = True
        self._next.terminate()

    def join(self, timeout: float | None = None) -> None:
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        while self._open.values and time.monotonic() < deadline:
            try:
                self._flush(force=True, timed=True)
            except MessageRejected:
                self._next.poll()  # lets it hand finished work on, which makes room
                time.sleep(0.005)
        self._next.close()
        self._next.join(None if timeout is None else max(0.0, deadline - time.monotonic()))

    def _flush(self, force: bool, timed: bool) -> None:
        batch = self._open
        if not batch.values:
            return
        if not force and not (len(batch.values) >= self._max_messages or batch.size >= self._max_bytes
                              or (timed and time.monotonic() >= batch.closes_at)):
            return
        self._next.submit(batch.message())  # MessageRejected: kept, offered again
        self._open = _Open()


def window_end(written: Optional[datetime], seconds: float) -> float:
    """When a batch that starts with a message written at `written` closes, on the monotonic
    clock: `seconds` after the message was written, not after the sink first saw it. A message
    that waited out the previous insert is not made to wait a whole window more (freshness p99,
    BENCHMARKS.md); a backlog's batches close once what is already fetched is in. A writer's
    clock behind ours can only close batches early; one ahead of it gets the whole window."""
    if written is None:
        return math.inf
    age = max(0.0, time.time() - written.timestamp())
    return time.monotonic() + seconds - age


def dedup_token(spans: dict[Partition, list[int]]) -> str:
    """A token naming exactly which offsets the batch holds."""
    text = ";".join(f"{p.topic.name}:{p.index}:{a}-{b}"
                    for p, (a, b) in sorted(spans.items(), key=lambda item: (item[0].topic.name, item[0].index)))
    return hashlib.sha256(text.encode()).hexdigest()
