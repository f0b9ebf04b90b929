"""Under-replicated and offline partitions per topic: the rule on metadata alone, then the
collector against the real broker (one broker: every partition healthy; its answer kept
for `max_age`), and against no broker (no samples, and not asked again at every scrape)."""

from __future__ import annotations

import secrets
import time

from confluent_kafka.admin import AdminClient, NewTopic, PartitionMetadata, TopicMetadata

from bus.partition_health import PartitionHealthCollector, partition_health
from tests.conftest import eventually
from tests.kafka_fixture import free_port


def topic(*partitions: tuple[int, list[int], list[int]]) -> TopicMetadata:
    """A topic's metadata from (leader, replicas, in-sync replicas) per partition."""
    meta = TopicMetadata()
    for number, (leader, replicas, isrs) in enumerate(partitions):
        part = PartitionMetadata()
        part.id, part.leader, part.replicas, part.isrs = number, leader, replicas, isrs
        meta.partitions[number] = part
    return meta


def test_offline_is_no_leader_and_under_replicated_is_fewer_in_sync_than_replicas():
    topics = {
        "sluice.raw": topic((1, [1, 2, 3], [1, 2, 3]), (2, [2, 3, 1], [2, 3]), (-1, [3, 1, 2], [3]),
                            (3, [3, 1, 2], [3])),
        "sluice.frames": topic((1, [1, 2, 3], [1, 2, 3])),
        "__consumer_offsets": topic((2, [1, 2, 3], [2])),
        "other.raw": topic((-1, [1], [])),  # not ours
    }
    assert partition_health(topics, "sluice.") == {
        "sluice.raw": (2, 1), "sluice.frames": (0, 0), "__consumer_offsets": (1, 0)}
    assert partition_health(topics, "") == {
        "sluice.raw": (2, 1), "sluice.frames": (0, 0), "__consumer_offsets": (1, 0), "other.raw": (0, 1)}


def samples(collector: PartitionHealthCollector, internal: bool = False) -> dict[str, dict[str, float]]:
    """{family name: {topic: value}} of one collect(); Kafka's own `__consumer_offsets` only with
    `internal` (on the session's broker it exists once an earlier test's group has committed)."""
    return {family.name: {s.labels["topic"]: s.value for s in family.samples
                          if internal or not s.labels["topic"].startswith("__")}
            for family in collector.collect()}


def test_the_real_broker_reports_every_topic_healthy_and_is_asked_at_most_once_per_max_age(kafka_bootstrap):
    prefix, max_age = f"health{secrets.token_hex(3)}.", 8
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})

    def create(name: str, partitions: int) -> None:
        admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)
        eventually(lambda: all(p.leader >= 0 for p in admin.list_topics(name, timeout=5).topics[name]
                               .partitions.values()), timeout=15)

    first, later = f"{prefix}raw", f"{prefix}frames"
    create(first, 3)
    collector = PartitionHealthCollector(kafka_bootstrap, prefix, max_age=max_age)
    asking = time.monotonic()
    assert samples(collector) == {"sluice_kafka_under_replicated_partitions": {first: 0.0},
                                  "sluice_kafka_offline_partitions": {first: 0.0}}
    answered = time.monotonic()  # the answer is kept from a moment between these two

    create(later, 2)
    assert time.monotonic() - asking < max_age, "the machine is too slow for this test's timing"
    kept = samples(collector)  # the answer of the first scrape, from before the topic existed
    assert later not in kept["sluice_kafka_offline_partitions"]
    time.sleep(max(0.0, answered + max_age - time.monotonic()) + 0.1)
    # Asked anew now; a loaded machine may take a moment to show the new topic's partitions.
    eventually(lambda: samples(collector) == {"sluice_kafka_under_replicated_partitions": {first: 0.0, later: 0.0},
                                              "sluice_kafka_offline_partitions": {first: 0.0, later: 0.0}},
               timeout=10, interval=0.5)


def test_a_broker_that_does_not_answer_gives_no_samples_and_is_not_asked_at_every_scrape():
    collector = PartitionHealthCollector(f"127.0.0.1:{free_port()}", "sluice.", timeout=1, max_age=30)
    started = time.monotonic()
    assert samples(collector) == {"sluice_kafka_under_replicated_partitions": {},
                                  "sluice_kafka_offline_partitions": {}}
    assert time.monotonic() - started < 5  # bounded by the timeout, never a hung scrape
    started = time.monotonic()
    for _ in range(5):
        samples(collector)
    assert time.monotonic() - started < 0.5  # the failure is kept too
