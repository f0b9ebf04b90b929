"""A Kafka → warehouse consumer loop: batch by rows and time, insert, then commit.

The order is the guarantee: offsets are committed only after the warehouse
accepted the insert. The insert of one batch runs on its own thread while the
loop fetches and prepares (decodes) the next: at most one insert is in flight,
and batches are inserted and committed strictly in the order they were read.
A crash between an insert and its commit replays the batch; the insert
carries a deduplication token built from the batch's offset ranges, and the
readings table is a ReplacingMergeTree keyed by (org, thing, metric, ts), so
a replay never shows up as duplicate readings.

Broker loss is weathered, not fatal: polls and commits are retried with
backoff while librdkafka reconnects and rejoins the group. A commit of
partitions revoked meanwhile is dropped (or left out, if only some were):
the new owner replays them, which the dedup token and the
ReplacingMergeTree absorb.
A revocation, and the loop's end, first wait for the insert in flight to
finish (or fail): a successful one is committed while the partitions are
still ours. The loop reports to the process's health registry (bus.health):
failing while it retries or while messages wait that it does not consume,
dead if it ends on its own or stays silent past its stall limit (waiting for
an insert does not count as turning).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from bus import metrics
from bus.health import health
from bus.logs import librdkafka_logger

log = logging.getLogger(__name__)

# Turns one batch of message values into what InsertBatch takes (decoding, building columns).
# Runs on the loop's thread while the previous batch is being inserted. May raise: retried as an insert.
Prepare = Callable[[list[bytes]], Any]
# Inserts one prepared batch with its dedup token and returns its row count. Runs on the insert thread. May raise.
InsertBatch = Callable[[Any, str], int]

# A commit refused with these means the group moved on without us: the partitions are someone else's.
_REVOKED = {KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID, KafkaError.REBALANCE_IN_PROGRESS,
            KafkaError.FENCED_INSTANCE_ID, KafkaError._ASSIGNMENT_LOST, KafkaError._STATE}
MAX_BACKOFF_S = 10.0


@dataclass
class _Batch:
    messages: list[Message]
    token: str
    prepared: Any = None
    unprepared: Exception | None = None  # what prepare raised; the insert thread prepares again
    future: Future | None = None  # the insert's, once submitted


class BatchingSink:
    """Consumes `topic` in group `group`: `prepare`, then `insert`, per batch of messages.

    `prepare` defaults to passing the message values on as they are. With
    `instance_id` the consumer is a static group member (group.instance.id).
    `run()` blocks until `stop()` and raises nothing; an insert or commit that
    fails is retried with backoff (the consumer keeps its session alive by
    pausing its partitions), so a warehouse or broker outage delays data but
    never drops it. Every consumer call is made on run()'s thread.
    """

    def __init__(self, bootstrap: str, group: str, topic: str, insert: InsertBatch,
                 max_messages: int, max_bytes: int, max_ms: int, name: str = "sink", instance_id: str = "",
                 prepare: Prepare | None = None) -> None:
        self._topic = topic
        self._insert = insert
        self._prepare = prepare or (lambda values: values)
        # One worker: at most one insert in flight, so inserts land in the order batches were read.
        self._inserter = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-insert")
        self._queued: _Batch | None = None  # read and prepared, waiting for the insert in flight
        self._in_flight: _Batch | None = None
        self._holding = False  # partitions held paused while the loop waits out a failure
        self._max_messages = max(1, max_messages)
        self._max_bytes = max_bytes
        self._max_seconds = max_ms / 1000
        self.name = name
        self._stop = threading.Event()
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": name,  # names the loop in librdkafka's log lines
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "fetch.max.bytes": 64 * 1024 * 1024,
            # A crashed owner (no LeaveGroup) blocks its partitions this long; default is 45 s.
            "session.timeout.ms": 10_000,
            "logger": librdkafka_logger(),
            # Static membership: a restarted instance takes its partitions back at once.
            **({"group.instance.id": instance_id} if instance_id else {}),
        })
        self.rows_inserted = 0
        for family in (metrics.ROWS_INSERTED, metrics.INSERT_ERRORS):
            family.labels(name)  # exported at 0 from the start, so rates and alerts see it
        self.ready = threading.Event()
        # Progress watch: messages waiting in assigned partitions, yet none consumed for a while,
        # is a loop that turns without working (it is what a partition left paused looks like).
        self._progress_at = time.monotonic()
        self._lag_check_at = 0.0
        self._stuck = ""
        # Stalled: no turn of the loop for this long (an insert blocked, a wedged client call).
        self.health = health().component(name, stall_after=120.0)

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        try:
            self._consumer.subscribe([self._topic], on_assign=self._assigned, on_revoke=self._revoked,
                                     on_lost=self._lost)
            self.health.ok()
            delay = 0.2
            while not self._stop.is_set():
                try:
                    self._turn()
                    self._check_progress()
                    if self._stuck:
                        self.health.failing(self._stuck)
                    else:
                        self.health.ok()
                    delay = 0.2
                except Exception as exc:  # whatever it is, a loop that ends silently is worse
                    log.exception("%s: unexpected error; retrying in %.1fs", self.name, delay)
                    self.health.failing(f"unexpected error: {exc}")
                    self._pause_and_wait(delay)
                    delay = min(delay * 2, MAX_BACKOFF_S)
        except BaseException as exc:
            self.health.dead(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            try:
                self._settle(commit=True)  # the insert in flight ends before the partitions are given up
            except Exception:
                log.exception("%s: settling the last insert failed", self.name)
            self._inserter.shutdown(wait=True)
            try:
                self._consumer.close()
            except Exception:
                log.exception("%s: closing the consumer failed", self.name)
        if self._stop.is_set():
            self.health.stopped()
        else:
            self.health.dead("the loop ended")

    def _turn(self) -> None:
        """Read and prepare the next batch while the previous one is inserted, then commit
        the previous one and hand the next to the insert thread.

        A batch read is kept (`_queued`) until its insert is submitted, so an error
        anywhere in a turn never loses it: the next turn takes it up again.
        """
        if self._queued is None:
            messages = self._collect()
            if messages:
                self._queued = self._prepared(messages)
        self._finish()
        if self._queued is not None and self._in_flight is None and not self._stop.is_set():
            self._in_flight, self._queued = self._queued, None
            self._submit(self._in_flight)

    def _prepared(self, messages: list[Message]) -> _Batch:
        batch = _Batch(messages, _dedup_token(messages))
        try:
            batch.prepared = self._prepare([m.value() for m in messages])
        except Exception as exc:  # reported and retried like a failed insert, in its turn
            batch.unprepared = exc
        return batch

    def _submit(self, batch: _Batch) -> None:
        if batch.unprepared is not None:
            batch.future = Future()
            batch.future.set_exception(batch.unprepared)
        else:
            batch.future = self._inserter.submit(self._write, batch)

    def _write(self, batch: _Batch) -> int:
        """On the insert thread: one attempt at inserting `batch` (preparing it first after a failed prepare)."""
        if batch.unprepared is not None:
            batch.prepared = self._prepare([m.value() for m in batch.messages])
            batch.unprepared = None
        started = time.monotonic()
        rows = self._insert(batch.prepared, batch.token)
        metrics.INSERT_DURATION.labels(self.name).observe(time.monotonic() - started)
        return rows

    def _finish(self) -> None:
        """Wait for the insert in flight; retry it with backoff until it succeeds (or stop()), then commit.

        Blocks for the insert (not a turn of the loop: a wedged insert stalls the
        component), and for the retries and the commit."""
        batch = self._in_flight
        if batch is None:
            return
        delay = 0.2
        while True:
            try:
                rows = batch.future.result()
                break
            except Exception as exc:
                metrics.INSERT_ERRORS.labels(self.name).inc()
                log.error("%s: insert failed; retrying in %.1fs", self.name, delay, exc_info=exc)
                self.health.failing(f"insert failing: {exc}")
                self._pause_and_wait(delay)
                if self._stop.is_set():
                    return  # not committed: the next owner of these partitions replays them
                delay = min(delay * 2, MAX_BACKOFF_S)
                self._submit(batch)
        self._done(batch, rows)
        self._commit(_next_offsets(batch.messages))

    def _done(self, batch: _Batch, rows: int) -> None:
        self._in_flight = None
        metrics.ROWS_INSERTED.labels(self.name).inc(rows)
        metrics.LAST_INSERT.labels(self.name).set_to_current_time()
        metrics.SINK_BATCH.labels(self.name).observe(len(batch.messages))
        metrics.SINK_BYTES.labels(self.name).inc(sum(len(m.value() or b"") for m in batch.messages))
        self.rows_inserted += rows

    def _settle(self, commit: bool) -> None:
        """Let the insert in flight finish (or fail); commit it if it succeeded and `commit`.

        Called before partitions are given up (revoked, lost, closing). A failed
        insert stays in flight: the loop retries it afterwards, and its commit
        then leaves out the partitions that are no longer ours."""
        batch = self._in_flight
        if batch is None or batch.future is None:
            return
        try:
            rows = batch.future.result()  # blocks for the insert's own duration
        except Exception:
            return
        self._done(batch, rows)
        if commit:
            self._commit(_next_offsets(batch.messages), retry=False)

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("%s: assigned %s", self.name, _names(partitions))
        consumer.incremental_assign(partitions)
        if self._holding:
            # Assigned while the loop waits out a failure: paused like the rest, or the wait's
            # poll would return (and lose) their messages. The wait resumes them with the rest.
            consumer.pause(partitions)
        else:
            # librdkafka keeps a partition's pause across losing and regaining it: a partition
            # paused during an outage would come back silent.
            consumer.resume(partitions)
        self._progress_at = time.monotonic()
        self.ready.set()

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("%s: revoked %s", self.name, _names(partitions))
        # Still ours until this returns: commit the insert in flight now rather than have the next owner replay it.
        self._settle(commit=True)

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("%s: lost %s (session expired); their next owner replays what was not committed",
                    self.name, _names(partitions))
        self._settle(commit=False)  # a commit would be refused: the group has moved on

    def _collect(self, idle_turn: float = 1.0) -> list[Message]:
        """The next batch; empty after `idle_turn` s without messages, so the loop can check on itself."""
        batch: list[Message] = []
        size = 0
        idle_until = time.monotonic() + idle_turn
        deadline = time.monotonic() + self._max_seconds
        while len(batch) < self._max_messages and size < self._max_bytes and not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for message in self._consumer.consume(self._chunk(len(batch), size), timeout=min(remaining, 0.2)):
                error = message.error()
                if error is None:
                    batch.append(message)
                    size += len(message.value() or b"")
                elif error.code() != KafkaError._PARTITION_EOF:
                    log.warning("%s: consume error (the client retries): %s", self.name, error)
            self.health.beat()
            if not batch:
                if time.monotonic() >= idle_until:
                    break
                deadline = time.monotonic() + self._max_seconds  # idle: start the clock at the first message
        return batch

    def _chunk(self, count: int, size: int, first: int = 100) -> int:
        """How many messages to ask consume() for: about as many as still fit the byte limit,
        guessed from the batch's mean message so far. consume() returns as soon as it has that
        many, so a backlog fills a batch up to its limit (not several times past it) without
        waiting out the poll timeout."""
        wanted = min(10_000, self._max_messages - count)
        if not count:
            return min(wanted, first)
        if not size:
            return wanted
        return max(1, min(wanted, (self._max_bytes - size) * count // size))

    def _commit(self, offsets: list[TopicPartition], retry: bool = True) -> None:
        """Commit after the insert: only the partitions still ours (a revoked one's new owner
        replays, deduplicated); retried until done, revoked or stop() unless not `retry`.
        Blocks up to a few seconds per try."""
        started = time.monotonic()
        offsets = self._owned(offsets)
        delay = 0.2
        while offsets:
            try:
                self._consumer.commit(offsets=offsets, asynchronous=False)
                break
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() in _REVOKED or len(self._owned(offsets)) < len(offsets):
                    log.warning("%s: commit refused (%s): the partitions moved on; their new owner replays "
                                "the batch (deduplicated)", self.name, error)
                    break
                if not retry or self._stop.is_set():
                    log.warning("%s: commit failed (%s); the batch will be replayed (deduplicated)", self.name, error)
                    break
                log.warning("%s: commit failed (%s); retrying in %.1fs", self.name, error, delay)
                self.health.failing(f"commit failing: {error}")
                self._pause_and_wait(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
        metrics.COMMIT_DURATION.labels(self.name).observe(time.monotonic() - started)
        self._progress_at = time.monotonic()

    def _check_progress(self, every: float = 10.0) -> None:
        """Every `every` s once idle that long: are messages waiting that we do not consume?

        Fails the component while they are; dead (the service restarts) once that lasts
        past the stall limit. Asks the broker, so it blocks up to a few seconds.
        """
        now = time.monotonic()
        if now - self._progress_at < every:
            self._stuck = ""
            return
        if now < self._lag_check_at:
            return
        self._lag_check_at = now + every
        try:
            waiting = self._waiting()
        except KafkaException:
            return  # the broker is away: the broker probe reports that
        if not waiting:
            self._progress_at, self._stuck = now, ""
            return
        idle = now - self._progress_at
        self._stuck = f"{waiting} messages waiting, none consumed for {idle:.0f} s"
        log.error("%s: %s", self.name, self._stuck)
        if idle > self.health.stall_after:
            self.health.dead(self._stuck)

    def _waiting(self) -> int:
        assigned = self._consumer.assignment()
        if not assigned:
            return 0
        positions = self._consumer.position(assigned)
        committed = {(tp.topic, tp.partition): tp.offset for tp in self._consumer.committed(assigned, timeout=5)}
        waiting = 0
        for tp in positions:
            low, high = self._consumer.get_watermark_offsets(tp, timeout=5)
            at = tp.offset if tp.offset >= 0 else committed.get((tp.topic, tp.partition), -1)
            waiting += max(0, high - (at if at >= 0 else low))
        return waiting

    def _owned(self, offsets: list[TopicPartition]) -> list[TopicPartition]:
        """The offsets of partitions assigned to us now (all of them if the client cannot tell)."""
        try:
            assigned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        except KafkaException:
            return offsets
        return [tp for tp in offsets if (tp.topic, tp.partition) in assigned]

    def _pause_and_wait(self, seconds: float) -> None:
        # Keep polling while paused: the group does not evict us during a long outage, and
        # librdkafka (which works inside poll) reconnects and rejoins meanwhile.
        try:
            self._consumer.pause(self._consumer.assignment())
        except KafkaException as exc:
            log.warning("%s: pause failed: %s", self.name, exc)
        deadline = time.monotonic() + seconds
        self._holding = True
        try:
            while time.monotonic() < deadline and not self._stop.is_set():
                message = self._consumer.poll(0.1)
                if message is not None and message.error() is None:
                    # Not ours to drop: the next commit past it would skip it. Read it again later.
                    log.warning("%s: a message arrived while paused; seeking back to it", self.name)
                    self._consumer.seek(TopicPartition(message.topic(), message.partition(), message.offset()))
                self.health.beat()
        finally:
            self._holding = False
        try:
            # A rebalance meanwhile may have taken some of them; those come back unpaused anyway.
            self._consumer.resume(self._consumer.assignment())
        except KafkaException as exc:
            log.warning("%s: resume failed: %s", self.name, exc)


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"


def _next_offsets(batch: list[Message]) -> list[TopicPartition]:
    last: dict[tuple[str, int], int] = {}
    for m in batch:
        last[(m.topic(), m.partition())] = m.offset()
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


def _dedup_token(batch: list[Message]) -> str:
    """A token naming exactly which offsets the batch holds."""
    ranges: dict[tuple[str, int], list[int]] = {}
    for m in batch:
        span = ranges.setdefault((m.topic(), m.partition()), [m.offset(), m.offset()])
        span[1] = m.offset()
    text = ";".join(f"{t}:{p}:{a}-{b}" for (t, p), (a, b) in sorted(ranges.items()))
    return hashlib.sha256(text.encode()).hexdigest()
