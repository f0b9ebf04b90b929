"""Creates the pipeline's topics with explicit partitions, replicas and configs, and
brings the configs of topics that already exist (an older deployment's) up to date."""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic,
                                   ResourceType)

from config import Settings
from schemas.topics import INGEST, SPECS, MessageLimits, TopicSpec, Topics, topic_configs

log = logging.getLogger(__name__)


def ensure_topics(bootstrap: str, settings: Settings, timeout: float = 30) -> None:
    """Create missing topics and set the declared configs on existing ones
    (incrementally: configs we do not declare are left as they are). New topics get
    `replication_factor` replicas; every topic gets `min.insync.replicas` for the
    replicas it has. Blocks; raises KafkaException, or ValueError when the min ISR
    asked for exceeds a topic's replicas (no write would ever be acknowledged), or
    TimeoutError when a created topic is not in the brokers' metadata within `timeout` s."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = Topics(settings.topic_prefix)
    limits = MessageLimits.for_body(settings.max_body_bytes)
    cluster = admin.list_topics(timeout=timeout)
    replicas = replication_factor(settings, len(cluster.brokers))
    existing = {name: len(next(iter(meta.partitions.values())).replicas)
                for name, meta in cluster.topics.items() if meta.partitions}
    specs = {topics.name(spec.logical): spec for spec in SPECS}
    # All checked before anything is created.
    configs = {name: _configs(spec, limits, settings, name, existing.get(name, replicas))
               for name, spec in specs.items()}
    for name in specs.keys() & existing.keys():
        if existing[name] != replicas:
            # Changing a topic's replicas moves its data: an operator's step, not a start-up side effect.
            log.warning("topic %s has %d replicas, not %d: kafka-reassign-partitions.sh changes that", name,
                        existing[name], replicas)
    created: set[str] = set()
    wanted = [NewTopic(name, num_partitions=_partitions(spec, settings), replication_factor=replicas,
                       config=configs[name])
              for name, spec in specs.items() if name not in existing]
    if wanted:
        for name, future in admin.create_topics(wanted, operation_timeout=timeout).items():
            try:
                future.result()
                created.add(name)
                log.info("created topic %s (%d replicas)", name, replicas)
            except KafkaException as exc:
                if exc.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS: it exists after all (or another process won)
                    raise
        _wait_listed(admin, specs.keys(), timeout)
    altered = [
        ConfigResource(ResourceType.TOPIC, name, incremental_configs=[
            ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
            for key, value in configs[name].items()])
        for name in specs
        if name not in created
    ]
    if altered:
        for resource, future in admin.incremental_alter_configs(altered, request_timeout=timeout).items():
            future.result()
            log.info("configs of topic %s are up to date", resource.name)


def _wait_listed(admin: AdminClient, names, timeout: float) -> None:
    # A topic is created once the controller has it; brokers learn of it a moment later (~0.1 s on a
    # busy machine), and until then a service starting on it, or a describe, finds no such topic.
    deadline = time.monotonic() + timeout
    while missing := set(names) - set(admin.list_topics(timeout=timeout).topics):
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics {sorted(missing)} were created, but the brokers' metadata still lacks "
                               f"them after {timeout} s")
        time.sleep(0.05)


def replication_factor(settings: Settings, brokers: int) -> int:
    """Replicas of a new topic: the setting, else as many as the cluster has brokers, up to 3."""
    return settings.replication_factor or min(3, brokers)


def min_insync_replicas(settings: Settings, replicas: int) -> int:
    """`min.insync.replicas` of a topic with `replicas` replicas: the setting, else 2 of 3 or more
    (an acknowledged write is on two brokers, and one broker may be down without refusing writes)."""
    return settings.min_insync_replicas or (2 if replicas >= 3 else 1)


def _configs(spec: TopicSpec, limits: MessageLimits, settings: Settings, name: str, replicas: int) -> dict[str, str]:
    in_sync = min_insync_replicas(settings, replicas)
    if in_sync > replicas:
        raise ValueError(f"SLUICE_MIN_INSYNC_REPLICAS={in_sync}, but topic {name} has {replicas} replica(s): "
                         "no write to it would be acknowledged")
    return {**topic_configs(spec, limits), "min.insync.replicas": str(in_sync)}


def _partitions(spec: TopicSpec, settings: Settings) -> int:
    if spec.single_partition:
        return 1
    if spec.logical == INGEST:  # sized for outside producers' keys and load, on its own
        return settings.ingest_partitions or settings.partitions
    return settings.partitions
