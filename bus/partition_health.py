"""Under-replicated and offline partitions per topic, from the cluster's metadata.

A partition is offline when it has no leader (-1): nothing can be written to it or read
from it. It is under-replicated when it has a leader but fewer in-sync replicas than
replicas: one more broker lost may take it offline, and acks=all writes wait on fewer
copies. Both come from one metadata request, which is kept for `max_age` seconds, so
however many scrapes arrive the broker sees at most one request per `max_age`. The
topics are those named with the topic prefix, and `__consumer_offsets`, where every
stage's committed offsets live. Collected on scrape by the edge, like consumer lag; a
broker that does not answer within `timeout` gives no samples (the lag's
`sluice_consumer_lag_up` says the broker is away), never a hung scrape.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

from confluent_kafka.admin import AdminClient, TopicMetadata
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bus.logs import librdkafka_logger

log = logging.getLogger(__name__)

OFFSETS_TOPIC = "__consumer_offsets"


def partition_health(topics: Mapping[str, TopicMetadata], prefix: str) -> dict[str, tuple[int, int]]:
    """{topic: (under-replicated partitions, offline partitions)} for the topics named with
    `prefix` and the offsets topic; every such topic appears, healthy ones with (0, 0)."""
    health = {}
    for name, topic in topics.items():
        if not (name.startswith(prefix) or name == OFFSETS_TOPIC):
            continue
        under = offline = 0
        for partition in topic.partitions.values():
            if partition.leader < 0:
                offline += 1
            elif len(partition.isrs) < len(partition.replicas):
                under += 1
        health[name] = (under, offline)
    return health


class PartitionHealthCollector(Collector):
    def __init__(self, bootstrap: str, topic_prefix: str, timeout: float = 5.0, max_age: float = 10.0) -> None:
        self._admin = AdminClient({"bootstrap.servers": bootstrap, "logger": librdkafka_logger()})
        self._prefix = topic_prefix
        self._timeout = timeout
        self._max_age = max_age
        self._lock = threading.Lock()  # concurrent scrapes wait for the one request in flight
        self._taken_at = float("-inf")
        self._health: dict[str, tuple[int, int]] | None = None

    def health(self) -> dict[str, tuple[int, int]] | None:
        """partition_health() of the cluster at most `max_age` seconds old, or None when the last
        request failed (also kept `max_age` seconds: a broker that is away is not asked at every scrape).
        Blocks up to `timeout` seconds when the kept answer is too old."""
        with self._lock:
            if time.monotonic() - self._taken_at >= self._max_age:
                try:
                    metadata = self._admin.list_topics(timeout=self._timeout)
                    self._health = partition_health(metadata.topics, self._prefix)
                except Exception as exc:  # a scrape must answer
                    log.warning("partition health: metadata request failed: %s", exc)
                    self._health = None
                self._taken_at = time.monotonic()
            return self._health

    def collect(self):
        under = GaugeMetricFamily(
            "sluice_kafka_under_replicated_partitions",
            "Partitions of the topic with a leader but fewer in-sync replicas than replicas.", labels=["topic"])
        offline = GaugeMetricFamily("sluice_kafka_offline_partitions",
                                    "Partitions of the topic without a leader.", labels=["topic"])
        for topic, (under_count, offline_count) in sorted((self.health() or {}).items()):
            under.add_metric([topic], float(under_count))
            offline.add_metric([topic], float(offline_count))
        yield under
        yield offline
