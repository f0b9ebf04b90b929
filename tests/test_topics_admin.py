"""Topics get their declared configs, whether created now or left by an older deployment."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from schemas.topics import SPECS, MessageLimits, Topics
from sluice.topics_admin import ensure_topics
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
