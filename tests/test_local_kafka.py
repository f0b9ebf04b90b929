"""End-to-end check of sluice.local_kafka: a real broker, real clients, a restart."""

from __future__ import annotations

import socket
import time
import uuid
from contextlib import ExitStack

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from sluice.local_kafka import LocalKafka

TOPIC = "sluice.test.local-kafka"
PARTITIONS = 2
COUNT = 100


def free_ports(count: int) -> list[int]:
    """Distinct free ports on 127.0.0.1 (all bound at once, so no repeats)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _produce(bootstrap: str, values: list[bytes]) -> None:
    failures: list[str] = []

    def on_delivery(err, _msg) -> None:
        if err is not None:
            failures.append(str(err))

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for i, value in enumerate(values):
        producer.produce(TOPIC, key=str(i).encode(), value=value, on_delivery=on_delivery)
    assert producer.flush(15) == 0, "messages still queued after flush"
    assert failures == []


def _consume_all(consumer: Consumer, expected: int, timeout: float = 20) -> list[bytes]:
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(values) < expected and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        values.append(msg.value())
    return values


def _read_from_start(bootstrap: str) -> list[bytes]:
    """Read the whole topic without a consumer group (assign, not subscribe)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        return _consume_all(consumer, COUNT)
    finally:
        consumer.close()


def test_produce_consume_and_survive_restart(tmp_path):
    port, controller_port = free_ports(2)
    kafka = LocalKafka(tmp_path, port=port, controller_port=controller_port, heap="256m")
    sent = [f"event-{i}-{uuid.uuid4().hex}".encode() for i in range(COUNT)]
    try:
        bootstrap = kafka.start(timeout=60)
        assert bootstrap == f"127.0.0.1:{port}"

        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)]).values():
            future.result(timeout=30)
        _produce(bootstrap, sent)

        # A consumer group exercises the group coordinator and __consumer_offsets.
        group = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": "sluice-test",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        })
        group.subscribe([TOPIC])
        received = _consume_all(group, COUNT)
        group.commit(asynchronous=False)
        group.close()
        assert sorted(received) == sorted(sent)

        kafka.stop()
        assert not kafka.running
        kafka.stop()  # idempotent

        kafka.start(timeout=60)
        assert sorted(_read_from_start(bootstrap)) == sorted(sent)

        # Committed group offsets survived the restart too.
        group = Consumer({"bootstrap.servers": bootstrap, "group.id": "sluice-test"})
        committed = group.committed(
            [TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=15
        )
        group.close()
        assert sum(tp.offset for tp in committed) == COUNT
    finally:
        kafka.stop()
    assert not kafka.running
