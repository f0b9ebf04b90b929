"""A Kafka → warehouse consumer loop: batch by rows and time, insert, then commit.

The order is the guarantee: offsets are committed only after the warehouse
accepted the insert. A crash in between replays the batch; the insert carries a
deduplication token built from the batch's offset ranges, and the readings
table is a ReplacingMergeTree keyed by (org, thing, metric, ts), so a replay
never shows up as duplicate readings.

Broker loss is weathered, not fatal: polls and commits are retried with
backoff while librdkafka reconnects and rejoins the group. A commit refused
because the partitions were revoked meanwhile is dropped: the new owner
replays the batch, which the dedup token and the ReplacingMergeTree absorb.
A consumer that librdkafka declares dead (a static member fenced after a broker
restart: bus.client_errors) is closed and replaced by a new one with the same
instance id, which takes the partitions back; the batch in hand is replayed.
The loop reports to the process's health registry (bus.health): failing while
it retries or while messages wait that it does not consume, dead if it ends on
its own or stays silent past its stall limit.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from typing import Callable

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError, KafkaException, Message, TopicPartition

from bus import metrics
from bus.client_errors import FatalClientError, raise_if_fatal, replacing
from bus.health import health
from bus.logs import librdkafka_logger

log = logging.getLogger(__name__)

# Decodes one batch of message values and inserts it; gets the dedup token. May raise.
InsertBatch = Callable[[list[bytes], str], int]

# A commit refused with these means the group moved on without us: the partitions are someone else's.
_REVOKED = {KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID, KafkaError.REBALANCE_IN_PROGRESS,
            KafkaError.FENCED_INSTANCE_ID, KafkaError._ASSIGNMENT_LOST, KafkaError._STATE}
MAX_BACKOFF_S = 10.0


class BatchingSink:
    """Consumes `topic` in group `group`, calling `insert` per batch of messages.

    With `instance_id` the consumer is a static group member (group.instance.id).
    `run()` blocks until `stop()` and raises nothing; an insert or commit that
    fails is retried with backoff (the consumer keeps its session alive by
    pausing its partitions), so a warehouse or broker outage delays data but
    never drops it.
    """

    def __init__(self, bootstrap: str, group: str, topic: str, insert: InsertBatch,
                 max_messages: int, max_bytes: int, max_ms: int, name: str = "sink", instance_id: str = "") -> None:
        self._topic = topic
        self._insert = insert
        self._max_messages = max(1, max_messages)
        self._max_bytes = max_bytes
        self._max_seconds = max_ms / 1000
        self.name = name
        self._stop = threading.Event()
        self._holding = False  # partitions held paused while the loop waits out a failure
        self._config = {
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
        }
        self._consumer = Consumer(self._config)
        self.rows_inserted = 0
        self._message_bytes = 0.0  # the topic's average message size, from what consume() returned
        for family in (metrics.ROWS_INSERTED, metrics.INSERT_ERRORS):
            family.labels(name)  # exported at 0 from the start, so rates and alerts see it
        self.ready = threading.Event()
        # Progress watch: messages waiting in assigned partitions, yet none consumed for a while,
        # is a loop that turns without working (it is what a partition left paused looks like).
        self._progress_at = time.monotonic()
        self._lag_check_at = 0.0
        self._waiting_since: float | None = None  # when a check first found messages waiting
        self._stuck = ""
        # Stalled: no turn of the loop for this long (an insert blocked, a wedged client call).
        self.health = health().component(name, stall_after=120.0)

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        try:
            self._subscribe()
            self.health.ok()
            delay = 0.2
            while not self._stop.is_set():
                try:
                    self._turn()
                    delay = 0.2
                except FatalClientError as exc:
                    self._replace_consumer(exc)
                except Exception as exc:  # whatever it is, a loop that ends silently is worse
                    log.exception("%s: unexpected error; retrying in %.1fs", self.name, delay)
                    self.health.failing(f"unexpected error: {exc}")
                    try:
                        self._pause_and_wait(delay)
                    except FatalClientError as fatal:
                        self._replace_consumer(fatal)
                    delay = min(delay * 2, MAX_BACKOFF_S)
        except BaseException as exc:
            self.health.dead(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            try:
                self._consumer.close()
            except Exception:
                log.exception("%s: closing the consumer failed", self.name)
        if self._stop.is_set():
            self.health.stopped()
        else:
            self.health.dead("the loop ended")

    def _turn(self) -> None:
        batch = self._collect()
        if batch:
            self._deliver(batch)
        self._check_progress()
        if self._stuck:
            self.health.failing(self._stuck)
        else:
            self.health.ok()

    def _subscribe(self) -> None:
        self._consumer.subscribe([self._topic], on_assign=self._assigned, on_revoke=self._revoked,
                                 on_lost=self._lost)

    def _replace_consumer(self, exc: FatalClientError) -> None:
        """Close a consumer librdkafka gave up on and join the group with a new one. The batch in
        hand was not committed: it comes again (deduplicated). With static membership the new
        consumer joins under the same instance id and so takes over the fenced member's place."""
        replacing(self.name, exc.error, log)
        self.health.failing(f"consumer replaced after a fatal error: {exc.error.str()}")
        try:
            self._consumer.close()
        except Exception:
            log.exception("%s: closing the dead consumer failed", self.name)
        self._consumer = Consumer(self._config)
        self._subscribe()
        self._holding = False
        self._progress_at, self._waiting_since, self._stuck = time.monotonic(), None, ""

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

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("%s: lost %s (session expired); their next owner replays what was not committed",
                    self.name, _names(partitions))

    def _collect(self, idle_turn: float = 1.0) -> list[Message]:
        """The next batch; empty after `idle_turn` s without messages, so the loop can check on itself."""
        batch: list[Message] = []
        size = 0
        idle_until = time.monotonic() + idle_turn
        deadline = time.monotonic() + self._max_seconds
        took = True
        while len(batch) < self._max_messages and size < self._max_bytes and not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 and not took:
                break  # past the window, and nothing more was already fetched
            wait = min(max(remaining, 0.0), 0.2)
            # consume() returns when it has as many as asked for or its timeout is up, so a batch's
            # first call takes what is already fetched and then waits for one message only: until
            # that message, the window's end is unknown, and a backlog's window is already over.
            fetched = self._consumer.consume(self._room(len(batch), size), timeout=0 if not batch else wait)
            if not fetched and not batch and wait:
                fetched = self._consumer.consume(1, timeout=wait)
            before = len(batch)
            for message in fetched:
                error = message.error()
                if error is None:
                    if not batch:
                        deadline = min(deadline, _window_end(message, self._max_seconds))
                    batch.append(message)
                elif error.code() != KafkaError._PARTITION_EOF:
                    raise_if_fatal(error)  # the batch in hand is dropped: its offsets were not committed
                    log.warning("%s: consume error (the client retries): %s", self.name, error)
            took = len(batch) > before
            fetched_bytes = sum(len(m.value() or b"") for m in batch[before:])
            if fetched_bytes:
                size += fetched_bytes
                mean = fetched_bytes / (len(batch) - before)
                self._message_bytes = 0.8 * self._message_bytes + 0.2 * mean if self._message_bytes else mean
            self.health.beat()
            if not batch:
                if time.monotonic() >= idle_until:
                    break
                deadline = time.monotonic() + self._max_seconds  # idle: start the clock at the first message
        return batch

    def _room(self, messages: int, size: int) -> int:
        """How many messages the next consume() may return: what the message limit leaves, and
        what the byte limit leaves at the topic's average message size. consume() hands over all
        it returns at once, so asking for 10,000 put a 37 MB batch against a 16 MiB limit
        whenever the backlog was already fetched (and the batch size swung with timing)."""
        room = min(10_000, self._max_messages - messages)
        if self._message_bytes:
            room = min(room, int((self._max_bytes - size) // self._message_bytes))
        else:
            room = 1  # the first message gives the size to go by
        return max(1, room)

    def _deliver(self, batch: list[Message]) -> None:
        token = _dedup_token(batch)
        delay = 0.2
        while True:
            try:
                started = time.monotonic()
                rows = self._insert([m.value() for m in batch], token)
                metrics.INSERT_DURATION.labels(self.name).observe(time.monotonic() - started)
                metrics.ROWS_INSERTED.labels(self.name).inc(rows)
                metrics.LAST_INSERT.labels(self.name).set_to_current_time()
                metrics.SINK_BATCH.labels(self.name).observe(len(batch))
                metrics.SINK_BYTES.labels(self.name).inc(sum(len(m.value() or b"") for m in batch))
                self.rows_inserted += rows
                break
            except Exception as exc:
                metrics.INSERT_ERRORS.labels(self.name).inc()
                log.exception("%s: insert failed; retrying in %.1fs", self.name, delay)
                self.health.failing(f"insert failing: {exc}")
                self._pause_and_wait(delay)
                if self._stop.is_set():
                    return  # not committed: the next owner of these partitions replays them
                delay = min(delay * 2, MAX_BACKOFF_S)
        started = time.monotonic()
        self._commit(_next_offsets(batch))
        metrics.COMMIT_DURATION.labels(self.name).observe(time.monotonic() - started)
        self._progress_at = time.monotonic()

    def _commit(self, offsets: list[TopicPartition]) -> None:
        """Commit after the insert; retried until done, revoked or stop(). Blocks up to a few seconds per try."""
        delay = 0.2
        while not self._stop.is_set():
            try:
                self._consumer.commit(offsets=offsets, asynchronous=False)
                return
            except KafkaException as exc:
                error = exc.args[0]
                raise_if_fatal(error)
                if error.code() in _REVOKED or not self._owns(offsets):
                    log.warning("%s: commit refused (%s): the partitions moved on; their new owner replays "
                                "the batch (deduplicated)", self.name, error)
                    return
                log.warning("%s: commit failed (%s); retrying in %.1fs", self.name, error, delay)
                self.health.failing(f"commit failing: {error}")
                self._pause_and_wait(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)

    def _check_progress(self, every: float = 10.0) -> None:
        """Every `every` s once idle that long: are messages waiting that we do not consume?

        Two checks in a row must find them, with nothing consumed between, so a message that
        arrives just before a check is not taken for a stuck loop. Fails the component while
        they are; dead (the service restarts) once that lasts past the stall limit. Asks the
        broker, so it blocks up to a few seconds.
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
            self._progress_at, self._stuck, self._waiting_since = now, "", None
            return
        if self._waiting_since is None or self._waiting_since < self._progress_at:
            # Seen once: it may have just arrived, a fetch away from being consumed. Only if the
            # next check still finds messages and nothing consumed since is the loop stuck.
            self._waiting_since = now
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

    def _owns(self, offsets: list[TopicPartition]) -> bool:
        try:
            assigned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        except KafkaException:
            return True  # cannot tell: keep retrying
        return all((tp.topic, tp.partition) in assigned for tp in offsets)

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
                if message is not None:
                    raise_if_fatal(message.error())
                if message is not None and message.error() is None:
                    # Not ours to drop: the next commit past it would skip it. Read it again later.
                    log.warning("%s: a message arrived while paused; seeking back to it", self.name)
                    try:
                        self._consumer.seek(TopicPartition(message.topic(), message.partition(), message.offset()))
                    except KafkaException as exc:  # taken by a rebalance meanwhile: its new owner reads it
                        log.warning("%s: seek failed: %s", self.name, exc)
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


def _window_end(message: Message, seconds: float) -> float:
    """When a batch that starts with `message` closes, on the monotonic clock: `seconds`
    after the message was written, not after this loop first saw it. A message that waited
    out the previous insert is not made to wait a whole window more (freshness p99, BENCHMARKS.md);
    a backlog's batches close once what is already fetched is in. A writer's clock behind ours
    can only close batches early; one ahead of it gets the whole window, as before."""
    kind, written_ms = message.timestamp()
    if kind == TIMESTAMP_NOT_AVAILABLE:
        return math.inf
    age = max(0.0, time.time() - written_ms / 1000)
    return time.monotonic() + seconds - age


def _dedup_token(batch: list[Message]) -> str:
    """A token naming exactly which offsets the batch holds."""
    ranges: dict[tuple[str, int], list[int]] = {}
    for m in batch:
        span = ranges.setdefault((m.topic(), m.partition()), [m.offset(), m.offset()])
        span[1] = m.offset()
    text = ";".join(f"{t}:{p}:{a}-{b}" for (t, p), (a, b) in sorted(ranges.items()))
    return hashlib.sha256(text.encode()).hexdigest()
