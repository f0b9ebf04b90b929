"""Creates the pipeline's topics with explicit partitions and configs, and brings
the configs of topics that already exist (an older deployment's) up to date."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic,
                                   ResourceType)

from config import Settings
from schemas.topics import INGEST, SPECS, MessageLimits, TopicSpec, Topics, topic_configs

log = logging.getLogger(__name__)


def ensure_topics(bootstrap: str, settings: Settings, replication: int = 1, timeout: float = 30,
                  min_insync_replicas: int | None = None) -> None:
    """Create missing topics and set the declared configs on existing ones
    (incrementally: configs we do not declare are left as they are). Blocks; raises KafkaException.

    `min_insync_replicas`, when given, is set on every topic: the copies an acks=all write needs.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = Topics(settings.topic_prefix)
    limits = MessageLimits.for_body(settings.max_body_bytes)

    def configs(spec: TopicSpec) -> dict[str, str]:
        declared = topic_configs(spec, limits)
        if min_insync_replicas is not None:
            declared["min.insync.replicas"] = str(min_insync_replicas)
        return declared

    existing = set(admin.list_topics(timeout=timeout).topics)
    created: set[str] = set()
    wanted = [
        NewTopic(topics.name(spec.logical),
                 num_partitions=_partitions(spec, settings),
                 replication_factor=replication,
                 config=configs(spec))
        for spec in SPECS
        if topics.name(spec.logical) not in existing
    ]
    if wanted:
        for name, future in admin.create_topics(wanted, operation_timeout=timeout).items():
            try:
                future.result()
                created.add(name)
                log.info("created topic %s", name)
            except KafkaException as exc:
                if exc.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS: it exists after all (or another process won)
                    raise
    altered = [
        ConfigResource(ResourceType.TOPIC, topics.name(spec.logical), incremental_configs=[
            ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
            for name, value in configs(spec).items()])
        for spec in SPECS
        if topics.name(spec.logical) not in created
    ]
    if altered:
        for resource, future in admin.incremental_alter_configs(altered, request_timeout=timeout).items():
            future.result()
            log.info("configs of topic %s are up to date", resource.name)


def _partitions(spec: TopicSpec, settings: Settings) -> int:
    if spec.single_partition:
        return 1
    if spec.logical == INGEST:  # sized for outside producers' keys and load, on its own
        return settings.ingest_partitions or settings.partitions
    return settings.partitions
