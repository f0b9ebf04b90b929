"""The processor's consumer (processors.faust_consumer): it waits at most FETCH_MAX_WAIT_MS for
data, and never commits past a message still in flight.

Faust fixes aiokafka's fetch wait at 1.5 s, and a long-poll of idle partitions then
held back the busy ones. Faust's commit let a one-offset hole at the head of the acked
offsets through, so a message judged late (processors.lanes) with the next one acked was
committed past. Both overrides reach into the consumer Faust builds, so a Faust or aiokafka
upgrade could undo them quietly: these check the consumer the processor's app really builds.
"""

import asyncio

import pytest
from faust.types import TP
from faust.types.tuples import Message

from config import Settings
from processors.app import create_app
from processors.faust_consumer import FETCH_MAX_WAIT_MS


def test_the_processors_consumer_waits_briefly_for_data(tmp_path):
    settings = Settings.from_env(kafka_bootstrap="127.0.0.1:9", topic_prefix="fetching.", state_dir=tmp_path)
    app = create_app(settings, settings.kafka_bootstrap, view=None, seen=None)

    async def fetch_wait_ms() -> int:
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            return consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()

    assert asyncio.run(fetch_wait_ms()) == FETCH_MAX_WAIT_MS <= 100


@pytest.fixture
def consumer(tmp_path):
    """The Faust consumer the processor's app builds (no broker is reached)."""
    settings = Settings.from_env(kafka_bootstrap="127.0.0.1:9", topic_prefix="commits.", state_dir=tmp_path)
    app = create_app(settings, settings.kafka_bootstrap, view=None, seen=None)
    app.topics._acking_topics.add(TOPIC)  # as Faust's conductor does once the agents subscribe
    return app.consumer


TOPIC = "commits.raw"
PARTITION = TP(TOPIC, 0)


def delivered(consumer, *offsets: int, partition: int = 0, generation: int | None = None) -> dict[int, Message]:
    """Messages as Faust tracks them once delivered to a stream and not acked yet."""
    messages = {}
    generation = consumer.app.consumer_generation_id if generation is None else generation
    for offset in offsets:
        message = Message(TOPIC, partition, offset, 0.0, 0, None, b"k", b"v", None, generation_id=generation)
        consumer.track_message(message)
        messages[offset] = message
    return messages


def test_a_commit_never_passes_a_message_still_in_flight(consumer):
    """faust-streaming issue 606's case: committed at 2585, 2585 still being judged, 2586-2589
    acked. Faust alone commits 2590, and a crash loses 2585."""
    consumer._committed_offset[PARTITION] = 2585
    messages = delivered(consumer, *range(2585, 2590))
    for offset in range(2586, 2590):
        consumer.ack(messages[offset])
    assert consumer._filter_committable_offsets([PARTITION]) == {}
    consumer.ack(messages[2585])
    assert consumer._filter_committable_offsets([PARTITION]) == {PARTITION: 2590}


def test_a_commit_goes_up_to_the_message_in_flight_and_on_once_it_is_acked(consumer):
    consumer._committed_offset[PARTITION] = 0  # Faust's own guard is off at offset 0
    messages = delivered(consumer, *range(0, 6))
    for offset in (0, 1, 3, 4, 5):
        consumer.ack(messages[offset])
    assert consumer._filter_committable_offsets([PARTITION]) == {PARTITION: 2}
    consumer._committed_offset[PARTITION] = 2
    assert consumer._filter_committable_offsets([PARTITION]) == {}
    consumer.ack(messages[2])
    assert consumer._filter_committable_offsets([PARTITION]) == {PARTITION: 6}


def test_a_message_in_flight_holds_back_only_its_own_partition(consumer):
    other = TP(TOPIC, 1)
    consumer._committed_offset[PARTITION] = consumer._committed_offset[other] = 10
    held = delivered(consumer, 10, 11)
    free = delivered(consumer, 10, 11, partition=1)
    consumer.ack(held[11])
    consumer.ack(free[10])
    consumer.ack(free[11])
    assert consumer._filter_committable_offsets([PARTITION, other]) == {other: 12}


def test_a_message_left_from_an_earlier_generation_does_not_hold_the_commit_back(consumer):
    """After a rebalance the stream skips what an earlier generation delivered, and delivers it
    again from the committed offset: only this generation's messages in flight count."""
    consumer._committed_offset[PARTITION] = 20
    delivered(consumer, 20, generation=consumer.app.consumer_generation_id - 1)
    again = delivered(consumer, 20, 21)
    consumer.ack(again[20])
    consumer.ack(again[21])
    assert consumer._filter_committable_offsets([PARTITION]) == {PARTITION: 22}
