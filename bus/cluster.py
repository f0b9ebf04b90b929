"""What a Kafka cluster looks like to a client: the brokers it lists, and each partition's
leader and in-sync replicas.

One metadata request answers it all (`describe`). A partition is under-replicated while
fewer replicas are in sync than it has, and offline while it has no leader: nothing can be
written to it or read from it then. The brokers listed are the live ones (a KRaft
controller drops a broker it fenced); a broker that hosts replicas but is not listed is down.
"""

from __future__ import annotations

import dataclasses

from confluent_kafka.admin import AdminClient

from bus.logs import librdkafka_logger


@dataclasses.dataclass(frozen=True)
class Partition:
    leader: int  # -1: none (offline)
    replicas: tuple[int, ...]
    isr: tuple[int, ...]

    @property
    def under_replicated(self) -> bool:
        return len(self.isr) < len(self.replicas)


@dataclasses.dataclass(frozen=True)
class ClusterView:
    brokers: dict[int, str]  # node id -> host:port of every live broker
    partitions: dict[tuple[str, int], Partition]  # (topic, partition) -> its state

    @property
    def known_brokers(self) -> list[int]:
        """Every broker the cluster knows of: the live ones and those holding a replica."""
        return sorted(set(self.brokers) | {b for p in self.partitions.values() for b in p.replicas})

    @property
    def down(self) -> list[int]:
        return [b for b in self.known_brokers if b not in self.brokers]

    def under_replicated(self, prefix: str = "") -> list[tuple[str, int]]:
        """The partitions (of topics starting with `prefix`) with a replica out of sync."""
        return sorted(k for k, p in self.partitions.items() if k[0].startswith(prefix) and p.under_replicated)

    def offline(self, prefix: str = "") -> list[tuple[str, int]]:
        """The partitions (of topics starting with `prefix`) without a leader."""
        return sorted(k for k, p in self.partitions.items() if k[0].startswith(prefix) and p.leader < 0)

    def leaders(self, topic: str) -> dict[int, int]:
        """Partition -> the broker leading it."""
        return {p: state.leader for (t, p), state in self.partitions.items() if t == topic}


def describe(bootstrap: str, timeout: float = 5.0) -> ClusterView:
    """The cluster as the broker that answers sees it; blocks up to `timeout` s, raises KafkaException."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": librdkafka_logger()})
    metadata = admin.list_topics(timeout=timeout)
    return ClusterView(
        brokers={b.id: f"{b.host}:{b.port}" for b in metadata.brokers.values()},
        partitions={(topic.topic, p.id): Partition(p.leader, tuple(p.replicas), tuple(p.isrs))
                    for topic in metadata.topics.values() for p in topic.partitions.values()})
