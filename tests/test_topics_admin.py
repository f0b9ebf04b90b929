"""Topics get their declared configs and replicas, whether created now or left by an older deployment."""

from __future__ import annotations

import dataclasses

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from config import Settings
from schemas.topics import SPECS, MessageLimits, Topics
from sluice.topics_admin import ensure_topics, min_insync_replicas, replication_factor
from tests.conftest import eventually, session_settings


def test_existing_topics_get_the_new_message_size_limits(kafka_bootstrap, tmp_path):
    settings = session_settings(kafka_bootstrap, tmp_path)
    topics = Topics(settings.topic_prefix)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    # An older deployment: the raw topic exists with the broker's default limit (1 MB) and a config of its own.
    old = NewTopic(topics.raw, num_partitions=2, replication_factor=1, config={"segment.bytes": "10485760"})
    admin.create_topics([old])[topics.raw].result()

    ensure_topics(kafka_bootstrap, settings)
    ensure_topics(kafka_bootstrap, settings)  # idempotent

    limits = MessageLimits.for_body(settings.max_body_bytes)
    expected = {topics.name(spec.logical): str(limits.topic(spec))
                for spec in SPECS}
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in expected]

    def described() -> dict:
        return {resource.name: future.result() for resource, future in admin.describe_configs(resources).items()}

    # A broker applies an altered config a moment after the controller accepted it.
    eventually(lambda: {name: configs["max.message.bytes"].value for name, configs in described().items()}
               == expected, timeout=10)
    assert described()[topics.raw]["segment.bytes"].value == "10485760"  # undeclared configs are left alone


@pytest.mark.parametrize("brokers, replicas, in_sync", [(1, 1, 1), (2, 2, 1), (3, 3, 2), (5, 3, 2)])
def test_replicas_follow_the_cluster_up_to_three_and_two_of_three_must_hold_a_write(brokers, replicas, in_sync):
    defaults = Settings()
    assert replication_factor(defaults, brokers) == replicas
    assert min_insync_replicas(defaults, replicas) == in_sync
    chosen = dataclasses.replace(defaults, replication_factor=5, min_insync_replicas=3)
    assert (replication_factor(chosen, brokers), min_insync_replicas(chosen, replicas)) == (5, 3)


def test_topics_on_one_broker_get_one_replica_and_accept_writes_with_one_in_sync(kafka_bootstrap, tmp_path):
    settings = session_settings(kafka_bootstrap, tmp_path)
    ensure_topics(kafka_bootstrap, settings)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    names = [Topics(settings.topic_prefix).name(spec.logical) for spec in SPECS]
    listed = admin.list_topics(timeout=30).topics
    assert {len(partition.replicas) for name in names for partition in listed[name].partitions.values()} == {1}
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    described = {r.name: f.result()["min.insync.replicas"].value for r, f in admin.describe_configs(resources).items()}
    assert set(described.values()) == {"1"}


def test_replicas_and_min_isr_asked_for_reach_the_cluster_or_nothing_is_created(kafka_bootstrap, tmp_path):
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    more_than_brokers = session_settings(kafka_bootstrap, tmp_path, replication_factor=2)
    with pytest.raises(KafkaException, match="(?i)replication factor"):
        ensure_topics(kafka_bootstrap, more_than_brokers)
    # Two in sync of one replica: no write would ever be acknowledged; refused before a topic exists.
    unreachable = session_settings(kafka_bootstrap, tmp_path, min_insync_replicas=2)
    with pytest.raises(ValueError, match=r"SLUICE_MIN_INSYNC_REPLICAS=2, but topic .* has 1 replica"):
        ensure_topics(kafka_bootstrap, unreachable)
    prefix = Topics(unreachable.topic_prefix).prefix
    assert not [name for name in admin.list_topics(timeout=30).topics if name.startswith(prefix)]
