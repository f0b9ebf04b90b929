"""A Kafka client librdkafka declares dead is replaced, never left looking idle.

A static group member fenced by another member with the same `group.instance.id` (what a
broker restart can do to a sink's consumer) gets one `_FATAL` event and then nothing: no
messages, no assignment, so the progress watch saw nothing waiting. The sink must close it
and join again with a new consumer, and consume what comes after."""

from __future__ import annotations

import os
import threading
import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bus import metrics
from tests.conftest import eventually


def replacements(component: str) -> float:
    return metrics.CLIENT_REPLACEMENTS.labels(component)._value.get()


def test_a_fenced_sink_consumer_is_replaced_and_the_sink_goes_on(kafka_bootstrap):
    from sinks.chain import SinkPolicy
    from sinks.consumer_loop import SinkConsumer

    topic = f"fenced-{os.getpid()}-{time.monotonic_ns()}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})  # kept: the future needs its client
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})

    def produce(values) -> None:
        for value in values:
            producer.produce(topic, key=value, value=value)
        assert producer.flush(10) == 0

    inserted: set[bytes] = set()
    sink = SinkConsumer(kafka_bootstrap, topic, topic, lambda values, token: inserted.update(values) or len(values),
                        SinkPolicy(max_messages=10, max_bytes=1 << 20, window_s=0.1), name=topic, instance_id="sink-1")
    thread = threading.Thread(target=sink.run, daemon=True)
    thread.start()
    try:
        first = [f"a{i}".encode() for i in range(20)]
        produce(first)
        eventually(lambda: inserted >= set(first), timeout=30)

        # Another member joins under the same instance id: the broker fences the sink's consumer.
        intruder = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": topic, "group.instance.id": "sink-1",
                             "partition.assignment.strategy": "cooperative-sticky", "enable.auto.commit": False,
                             "session.timeout.ms": 10_000})
        intruder.subscribe([topic])
        # (The sink's new consumer then fences the intruder in turn: it stops polling once that happened.)
        eventually(lambda: intruder.poll(0.2) is None and replacements(topic) >= 1, timeout=30, interval=0)
        intruder.close()

        later = [f"b{i}".encode() for i in range(20)]
        produce(later)
        eventually(lambda: inserted >= set(later), timeout=30)
        assert not sink.health.status()["fatal"], sink.health.status()
        assert thread.is_alive()
    finally:
        sink.stop()
        thread.join(15)
