"""What a Kafka cluster looks like to a client: the brokers it lists, each partition's leader
and replicas, and the partitions out of sync (bus.partition_health), from one metadata request.

The brokers listed are the live ones (a KRaft controller drops a broker it fenced); a broker
that hosts replicas but is not listed is down.
"""

from __future__ import annotations

import dataclasses

from confluent_kafka.admin import AdminClient

from bus.logs import librdkafka_logger
from bus.partition_health import partition_health


@dataclasses.dataclass(frozen=True)
class ClusterView:
    brokers: dict[int, str]  # node id -> host:port of every live broker
    leaders: dict[tuple[str, int], int]  # (topic, partition) -> the broker leading it (-1: none)
    replicas: dict[tuple[str, int], tuple[int, ...]]  # (topic, partition) -> the brokers holding it
    health: dict[str, tuple[int, int]]  # topic -> (under-replicated, offline) partitions, as partition_health

    @property
    def known_brokers(self) -> list[int]:
        """Every broker the cluster knows of: the live ones and those holding a replica."""
        return sorted(set(self.brokers) | {b for held in self.replicas.values() for b in held})

    @property
    def down(self) -> list[int]:
        return [b for b in self.known_brokers if b not in self.brokers]

    @property
    def in_sync(self) -> bool:
        """No partition of the topics looked at is under-replicated or offline."""
        return not any(under or offline for under, offline in self.health.values())

    def leaders_of(self, topic: str) -> dict[int, int]:
        """Partition -> the broker leading it."""
        return {p: leader for (t, p), leader in self.leaders.items() if t == topic}


def describe(bootstrap: str, prefix: str, timeout: float = 5.0) -> ClusterView:
    """The cluster as the broker that answers sees it, its health told for the topics named with
    `prefix` (and the consumer offsets); blocks up to `timeout` s, raises KafkaException."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": librdkafka_logger()})
    metadata = admin.list_topics(timeout=timeout)
    partitions = {(topic.topic, p.id): p for topic in metadata.topics.values() for p in topic.partitions.values()}
    return ClusterView(
        brokers={b.id: f"{b.host}:{b.port}" for b in metadata.brokers.values()},
        leaders={key: p.leader for key, p in partitions.items()},
        replicas={key: tuple(p.replicas) for key, p in partitions.items()},
        health=partition_health(metadata.topics, prefix))
