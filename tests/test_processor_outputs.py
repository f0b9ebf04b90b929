"""The agent's output producer against a real broker: what its awaitable promises
(every message queued so far is acknowledged) and that a failed message fails it."""

import asyncio
import os
import secrets

import pytest
from confluent_kafka import Consumer, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from processors.outputs import OutputProducer


@pytest.fixture()
def topic(kafka_bootstrap) -> str:
    name = f"outputs{secrets.token_hex(4)}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1,
                                  config={"max.message.bytes": "200000"})])[name].result(30)
    return name


def read_all(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g{secrets.token_hex(4)}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    values: list[bytes] = []
    try:
        for _ in range(60):
            values += [m.value() for m in consumer.consume(1000, timeout=0.5) if m.error() is None]
            if len(values) >= expected:
                break
    finally:
        consumer.close()
    return values


def test_once_the_sends_are_awaited_every_message_is_in_the_topic(kafka_bootstrap, topic):
    producer = OutputProducer(kafka_bootstrap, 1_000_000)
    out = producer.topic(topic)

    async def send_all() -> None:
        pending = [await out.send(key=str(i % 7).encode(), value=f"v{i}".encode()) for i in range(2000)]
        await asyncio.gather(*pending)

    try:
        asyncio.run(send_all())
        sent = {f"v{i}".encode() for i in range(2000)}
        assert set(read_all(kafka_bootstrap, topic, 2000)) == sent
    finally:
        producer.close()


def test_a_message_the_broker_refuses_fails_the_awaitable(kafka_bootstrap, topic):
    producer = OutputProducer(kafka_bootstrap, 1_000_000)
    out = producer.topic(topic)

    async def send_too_large() -> None:
        small = await out.send(key=b"k", value=b"fits")
        # Over the topic's max.message.bytes even compressed: random bytes do not shrink under lz4.
        large = await out.send(key=b"k", value=os.urandom(500_000))
        await asyncio.gather(small, large)

    try:
        with pytest.raises(KafkaException):
            asyncio.run(send_too_large())
    finally:
        producer.close()


def test_waiting_for_acks_does_not_wait_out_the_linger(kafka_bootstrap, topic):
    producer = OutputProducer(kafka_bootstrap, 1_000_000)
    producer._config["linger.ms"] = 60_000  # far beyond the wait below: only sending at once delivers in time
    out = producer.topic(topic)

    async def send_one() -> None:
        acked = await out.send(key=b"k", value=b"verdict")
        await asyncio.wait_for(producer.acked([acked]), 20)

    try:
        asyncio.run(send_one())
        assert read_all(kafka_bootstrap, topic, 1) == [b"verdict"]
    finally:
        producer.close()
