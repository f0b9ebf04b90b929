"""Which integrations this instance runs, decided by Kafka's group protocol.

Every instance of the stage joins one consumer group on the integrations topic. An
integration belongs to one partition (`envelope.partition_of`), so the member assigned that
partition runs it and no other member does. When a member dies, the group coordinator gives
its partitions to the others once its session times out (SLUICE_INTEGRATIONS_SESSION_TIMEOUT_MS);
a member that leaves cleanly hands them over at once.

The topic also holds each integration's state (a poll's cursor, keyed by integration id,
compacted): on assignment a partition is read from its beginning to its end before its
integrations start, so the new owner resumes from the last state its predecessor made durable.
Nothing is committed: the state is the topic itself.

Not thread-safe: `poll` (and the assign/revoke callbacks it runs) is called from the stage's
loop only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

import schemas
from bus.client_errors import raise_if_fatal
from bus.logs import librdkafka_logger

log = logging.getLogger(__name__)

STATE_KIND = "integration_state"
UNKNOWN_END = -1  # a partition assigned whose end offset was not asked for yet


class Assignment:
    def __init__(self, bootstrap: str, topic: str, group: str, *, instance_id: str, session_timeout_ms: int,
                 on_released: Callable[[set[int]], None]) -> None:
        self._topic = topic
        self._on_released = on_released
        config = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": session_timeout_ms,
            "heartbeat.interval.ms": max(100, session_timeout_ms // 6),
            "logger": librdkafka_logger(),
        }
        if instance_id:  # static membership: a restarted instance gets its partitions back at once
            config["group.instance.id"] = instance_id
        self._consumer = Consumer(config)
        self._loading: dict[int, int] = {}  # partition -> the end offset it must be read to
        self._owned: set[int] = set()
        self.partitions = 0  # of the topic, once known
        self.states: dict[str, dict] = {}  # integration id -> its last state, as loaded

    def start(self) -> None:
        meta = self._consumer.list_topics(self._topic, timeout=30).topics[self._topic]
        if meta.error is not None:
            raise KafkaException(meta.error)
        self.partitions = len(meta.partitions)
        self._consumer.subscribe([self._topic], on_assign=self._assigned, on_revoke=self._revoked,
                                 on_lost=self._revoked)

    def owns(self, partition: int) -> bool:
        return partition in self._owned

    def poll(self, timeout: float) -> None:
        """Keep the membership alive and load assigned partitions; blocks up to `timeout` s.
        Raises FatalClientError if librdkafka declares the consumer dead (the process exits
        and its supervisor starts it again)."""
        message = self._consumer.poll(timeout)
        if message is not None:
            if message.error() is None:
                self._apply(message)
            else:
                raise_if_fatal(message.error())  # anything else the client retries by itself
        if self._loading:
            self._check_loaded()

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The end each partition must be read to is asked for in poll, not here: while leaders move
        # (a broker lost) the question fails, and an exception in this callback would end the stage.
        for tp in partitions:
            tp.offset = OFFSET_BEGINNING
            self._loading[tp.partition] = UNKNOWN_END
        consumer.assign(partitions)
        log.info("integrations: assigned partitions %s", sorted(self._loading))

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {tp.partition for tp in partitions}
        released = gone & self._owned
        self._owned -= gone
        for partition in gone:
            self._loading.pop(partition, None)
        if released:
            # Before the next owner may start them: this returns only once they are stopped.
            self._on_released(released)
        log.info("integrations: released partitions %s", sorted(gone))

    def _apply(self, message) -> None:
        if message.partition() not in self._loading or message.value() is None:
            return  # an owned partition's state lives in its runners now: our own writes coming back
        try:
            record = schemas.decode(schemas.CATALOG_RECORD, message.value())
        except schemas.SchemaMismatch as exc:
            log.error("integrations: skipping an unreadable state record: %s", exc)
            return
        if record["kind"] == STATE_KIND:
            self.states[record["id"]] = orjson.loads(record["body"])

    def _check_loaded(self) -> None:
        for partition, end in list(self._loading.items()):
            if end == UNKNOWN_END:
                try:
                    _, high = self._consumer.get_watermark_offsets(TopicPartition(self._topic, partition), timeout=2)
                except KafkaException as exc:  # no leader yet, say: asked again on the next poll
                    log.warning("integrations: the end of partition %d is not known yet: %s", partition, exc)
                    continue
                self._loading[partition] = high
        known = [p for p, end in self._loading.items() if end != UNKNOWN_END]
        if not known:
            return
        positions = self._consumer.position([TopicPartition(self._topic, p) for p in known])
        for tp in positions:
            if tp.offset >= self._loading[tp.partition] or self._loading[tp.partition] == 0:
                del self._loading[tp.partition]
                self._owned.add(tp.partition)
                log.info("integrations: partition %d loaded; running its integrations", tp.partition)

    def close(self) -> None:
        """Leave the group (its partitions go to the others at once); call after stopping the runners."""
        self._consumer.close()
