"""The loop that feeds a sink's arroyo chain (sinks.chain) from a confluent-kafka consumer.

What arroyo's StreamProcessor does, kept ours where the sinks need more than it gives:
cooperative rebalancing (its KafkaConsumer assigns eagerly), a client error weathered in
place (it ends on any but a transport error), a dead client replaced (bus.client_errors),
commits retried with backoff (sinks.committing), bulk fetches, and health reporting.

- Messages go into the chain one by one; when it refuses one (MessageRejected: the insert
  step is busy or retrying), the loop holds it and the rest of its fetch, pauses its
  partitions and keeps polling, so the group session lives through a warehouse outage.
- Revocation joins the chain while the partitions are still ours: the batch in hand and
  the inserts in flight go in and are committed before the partitions go. An insert that
  fails during the join is not retried; its batch is left to the next owner, and the
  partitions kept go back to their committed offsets.
- A consumer librdkafka declares dead (a static member fenced after a broker restart) is
  closed and replaced by a new one with the same group.instance.id; what it had not
  committed is replayed.
- Health (bus.health): failing while inserts or commits fail, or while messages wait that
  the loop does not consume (sinks.progress_watch); dead if the loop ends on its own.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from datetime import datetime, timezone

from arroyo.processing.strategies import MessageRejected, ProcessingStrategy
from arroyo.types import BrokerValue, Message, Partition, Topic
from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError, KafkaException, TopicPartition

from bus.client_errors import FatalClientError, raise_if_fatal, replacing
from bus.health import health
from bus.logs import librdkafka_logger
from sinks.chain import SinkChain, SinkPolicy
from sinks.committing import Committer
from sinks.inserting import MAX_BACKOFF_S, InsertAbandoned, InsertBatch, Inserting, name_thread
from sinks.progress_watch import ProgressWatch

log = logging.getLogger(__name__)

FETCH = 500  # messages per consume() at most; fewer when a batch's bytes are near
TURN_S = 0.1  # a turn waits this long for messages (a batch's window closes that late at most)
HELD_TURN_S = 0.02  # while messages are held: how soon a finished insert is noticed


def consumer_config(bootstrap: str, group: str, name: str, instance_id: str) -> dict:
    return {
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


class SinkConsumer:
    """Consumes `topic` in group `group` through the chain `policy` builds around `insert`.

    `run()` blocks until `stop()` and raises nothing; it then joins the chain (the insert
    under way finishes and is committed) before it returns. `ready` is set at the first
    assignment.
    """

    def __init__(self, bootstrap: str, group: str, topic: str, insert: InsertBatch, policy: SinkPolicy,
                 name: str = "sink", instance_id: str = "") -> None:
        self.name = name
        self._topic = topic
        self._config = consumer_config(bootstrap, group, name, instance_id)
        self._stop = threading.Event()
        self._inserting = Inserting(insert, name)
        self._factory = SinkChain(policy, self._inserting)
        self._room = _Room(policy)
        self._strategy: ProcessingStrategy[bytes] | None = None
        self._held: deque[Message[bytes]] = deque()  # taken from Kafka, not yet taken by the chain
        self._paused = False
        self._rewind = False  # set: a batch was abandoned and the kept partitions could not be rewound
        self._partitions: dict[tuple[str, int], Partition] = {}
        self.ready = threading.Event()
        # Stalled: no turn of the loop for this long (a wedged client call).
        self.health = health().component(name, stall_after=120.0)
        self.watch = ProgressWatch(name, self.health)
        self._consumer = Consumer(self._config)
        self._committer = Committer(name, self._consumer, self.watch.progressed)

    @property
    def rows_inserted(self) -> int:
        return self._inserting.rows_inserted

    def stop(self) -> None:
        """Ends run() after the insert under way; a failing insert is not retried (not blocking)."""
        self._stop.set()
        self._inserting.closing.set()

    def run(self) -> None:
        name_thread(self.name)
        try:
            self._subscribe()
            self.health.ok()
            delay = 0.2
            while not self._stop.is_set():
                try:
                    self._turn()
                    delay = 0.2
                except FatalClientError as exc:
                    replacing(self.name, exc.error, log)
                    self._renew(f"consumer replaced after a fatal error: {exc.error.str()}")
                except Exception as exc:  # whatever it is, a loop that ends silently is worse
                    if self._stop.is_set():
                        break
                    log.exception("%s: unexpected error; starting again from the committed offsets in %.1fs",
                                  self.name, delay)
                    self.health.failing(f"unexpected error: {exc}")
                    self._stop.wait(delay)
                    self._renew(f"unexpected error: {exc}")
                    delay = min(delay * 2, MAX_BACKOFF_S)
            if not self._join():
                log.warning("%s: stopped with a batch not inserted; it is read again at the next start", self.name)
        except BaseException as exc:
            self.health.dead(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self._close()
        if self._stop.is_set():
            self.health.stopped()
        else:
            self.health.dead("the loop ended")

    def _turn(self) -> None:
        if self._rewind:
            self._renew("a batch was abandoned at a revocation; starting again from the committed offsets")
        self._chain().poll()
        self._offer()
        if self._held:
            self._poll_held()
        else:
            self._fetch()
        self._report()

    def _fetch(self) -> None:
        """Wait up to TURN_S for messages, then take what is already fetched until the chain
        refuses one or nothing more is there (the next poll of the chain may then close a batch
        by time)."""
        timeout = TURN_S
        while not self._held and not self._stop.is_set():
            fetched = self._consume(timeout)
            if not fetched:
                return
            self._take(fetched)
            timeout = 0

    def _consume(self, timeout: float) -> list:
        return self._consumer.consume(self._room.messages(), timeout=timeout)

    def _take(self, fetched: list) -> None:
        taken = []
        for message in fetched:
            error = message.error()
            if error is None:
                taken.append(self._wrap(message))
            elif error.code() != KafkaError._PARTITION_EOF:
                raise_if_fatal(error)  # what is held was not committed: it comes again
                log.warning("%s: consume error (the client retries): %s", self.name, error)
        if taken:
            self.watch.progressed()
            self._room.saw(taken)
            self._held.extend(taken)
            self._offer()

    def _offer(self) -> None:
        """Submit held messages in order until the chain refuses one: then pause, else resume."""
        while self._held:
            try:
                self._chain().submit(self._held[0])
            except MessageRejected:
                self._pause()
                return
            self._held.popleft()
        self._resume()

    def _poll_held(self) -> None:
        # Poll while paused: librdkafka serves rebalances and the group keeps us.
        message = self._consumer.poll(HELD_TURN_S)
        if message is None:
            return
        raise_if_fatal(message.error())
        if message.error() is None:
            # Not ours to drop: the next commit past it would skip it. Read it again later.
            log.warning("%s: a message arrived while paused; seeking back to it", self.name)
            try:
                self._consumer.seek(TopicPartition(message.topic(), message.partition(), message.offset()))
            except KafkaException as exc:  # taken by a rebalance meanwhile: its new owner reads it
                log.warning("%s: seek failed: %s", self.name, exc)

    def _report(self) -> None:
        if self._held:
            self.watch.progressed()  # waiting on the chain is no stall; its cause is reported below
        else:
            self.watch.check(self._consumer)
        reason = self._inserting.failing or self._committer.failing or self.watch.stuck
        if reason:
            self.health.failing(reason)
        else:
            self.health.ok()

    def _chain(self) -> ProcessingStrategy[bytes]:
        if self._strategy is None:
            self._strategy = self._factory.create_with_partitions(self._committer, {})
        return self._strategy

    def _wrap(self, message) -> Message[bytes]:
        key = (message.topic(), message.partition())
        partition = self._partitions.get(key)
        if partition is None:
            partition = self._partitions[key] = Partition(Topic(key[0]), key[1])
        kind, written_ms = message.timestamp()
        written = None if kind == TIMESTAMP_NOT_AVAILABLE else datetime.fromtimestamp(written_ms / 1000, timezone.utc)
        return Message(BrokerValue(message.value(), partition, message.offset(), written))

    # --- partitions coming and going ------------------------------------------------------

    def _subscribe(self) -> None:
        self._consumer.subscribe([self._topic], on_assign=self._assigned, on_revoke=self._revoked,
                                 on_lost=self._lost)

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("%s: assigned %s", self.name, _names(partitions))
        consumer.incremental_assign(partitions)
        if self._paused:
            # Assigned while the loop holds messages: paused like the rest, or the next poll would
            # return (and lose) their messages. They are resumed with the rest.
            consumer.pause(partitions)
        else:
            # librdkafka keeps a partition's pause across losing and regaining it: a partition
            # paused during an outage would come back silent.
            consumer.resume(partitions)
        self.watch.progressed()
        self.ready.set()

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("%s: revoked %s; joining the inserts in flight", self.name, _names(partitions))
        if not self._join():
            self._rewind_retained(partitions)
        self._forget(partitions)

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("%s: lost %s (session expired); their next owner replays what was not committed",
                    self.name, _names(partitions))
        self._forget(partitions)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._held = deque(m for m in self._held if (m.value.partition.topic.name, m.value.partition.index) not in gone)
        self._committer.forget(partitions)

    def _join(self) -> bool:
        """Close the chain and wait for it: the batch in hand and the inserts in flight go in and
        are committed. An insert failing meanwhile is abandoned, and nothing after it committed:
        then False."""
        strategy, self._strategy = self._strategy, None
        if strategy is None:
            return True
        self._inserting.closing.set()
        strategy.close()
        try:
            strategy.join()
            return True
        except InsertAbandoned as exc:
            log.warning("%s", exc)
            strategy.terminate()
            return False
        finally:
            if not self._stop.is_set():
                self._inserting.closing.clear()

    def _rewind_retained(self, revoked: list[TopicPartition]) -> None:
        """After an abandoned batch: the partitions we keep go back to their committed offsets
        (the consumer read past what was abandoned). If the broker cannot say, the consumer is
        replaced, which does the same."""
        self._held.clear()
        gone = {(tp.topic, tp.partition) for tp in revoked}
        try:
            retained = [tp for tp in self._consumer.assignment() if (tp.topic, tp.partition) not in gone]
            for tp in self._consumer.committed(retained, timeout=5) if retained else []:
                self._consumer.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0
                                                   else OFFSET_BEGINNING))
        except KafkaException as exc:
            log.warning("%s: cannot rewind the partitions kept (%s): replacing the consumer", self.name, exc)
            self._rewind = True

    def _abandon(self) -> None:
        """End the chain at once: the attempt under way finishes, nothing more is committed."""
        strategy, self._strategy = self._strategy, None
        if strategy is not None:
            self._inserting.closing.set()
            strategy.terminate()
            if not self._stop.is_set():
                self._inserting.closing.clear()
        self._held.clear()
        self._paused = False

    def _renew(self, reason: str) -> None:
        """Close the consumer and join the group with a new one (the same instance id, so a
        static member takes its own place back): it resumes from the committed offsets."""
        self.health.failing(reason)
        self._abandon()
        self._close()
        self._consumer = Consumer(self._config)
        self._committer = Committer(self.name, self._consumer, self.watch.progressed)
        self._subscribe()
        self._rewind = False
        self.watch.reset()

    def _close(self) -> None:
        try:
            self._consumer.close()
        except Exception:
            log.exception("%s: closing the consumer failed", self.name)

    def _pause(self) -> None:
        if not self._paused:
            self._paused = True
            self._set_paused(self._consumer.pause, "pause")

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            self._set_paused(self._consumer.resume, "resume")

    def _set_paused(self, call, what: str) -> None:
        try:
            call(self._consumer.assignment())
        except KafkaException as exc:
            log.warning("%s: %s failed: %s", self.name, what, exc)


class _Room:
    """How many messages the next consume() may return: at most FETCH, the batch's message
    limit, and what its byte limit holds at the topic's average message size (consume() hands
    over all it returns at once: a fetched backlog would otherwise overshoot by far)."""

    def __init__(self, policy: SinkPolicy) -> None:
        self._policy = policy
        self._message_bytes = 0.0

    def saw(self, messages) -> None:
        sizes = [len(m.payload or b"") for m in messages]
        mean = sum(sizes) / len(sizes)
        self._message_bytes = 0.8 * self._message_bytes + 0.2 * mean if self._message_bytes else mean

    def messages(self) -> int:
        room = min(FETCH, self._policy.max_messages)
        if self._message_bytes:
            room = min(room, int(self._policy.max_bytes // self._message_bytes))
        else:
            room = 1  # the first message gives the size to go by
        return max(1, room)


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
