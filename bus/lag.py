"""Consumer lag per group and partition, for every consumer group of this deployment.

Lag is the partition's high watermark minus the group's committed offset (or minus
the low watermark where the group has not committed yet: it will start at the
earliest message). The groups are those whose id starts with the topic prefix
(the processor's `{prefix}processors`, each sink's `{prefix}{name}`), found anew at
each scrape, so a stage added later is covered. Collected on scrape by the edge,
with admin requests bounded by `timeout` seconds; a broker that does not answer
gives `sluice_consumer_lag_up 0` and no lag samples, never a hung scrape.
"""

from __future__ import annotations

import logging

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bus.logs import librdkafka_logger

log = logging.getLogger(__name__)


class LagCollector(Collector):
    def __init__(self, bootstrap: str, group_prefix: str, timeout: float = 5.0) -> None:
        self._admin = AdminClient({"bootstrap.servers": bootstrap, "logger": librdkafka_logger()})
        self._prefix = group_prefix
        self._timeout = timeout

    def lag(self) -> dict[tuple[str, str, int], int]:
        """{(group, topic, partition): messages not yet committed}. May raise a KafkaException."""
        return {key: max(0, high - at) for key, (at, high) in self.positions().items()}

    def positions(self) -> dict[tuple[str, str, int], tuple[int, int]]:
        """{(group, topic, partition): (where the group resumes, high watermark)}; where it resumes
        is its committed offset, or the low watermark before its first commit. May raise a KafkaException."""
        listed = self._admin.list_consumer_groups(request_timeout=self._timeout).result()
        groups = sorted(g.group_id for g in listed.valid if g.group_id.startswith(self._prefix))
        committed: dict[str, dict[tuple[str, int], int]] = {}
        for group in groups:
            future = self._admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                                             request_timeout=self._timeout)[group]
            committed[group] = {(tp.topic, tp.partition): tp.offset for tp in future.result().topic_partitions}
        topics = {topic for offsets in committed.values() for topic, _ in offsets}
        if not topics:
            return {}
        metadata = self._admin.list_topics(timeout=self._timeout).topics
        partitions = [TopicPartition(t, p) for t in sorted(topics) if t in metadata for p in metadata[t].partitions]
        high = self._offsets(partitions, OffsetSpec.latest())
        low = self._offsets(partitions, OffsetSpec.earliest())
        positions = {}
        for group, offsets in committed.items():
            group_topics = {topic for topic, _ in offsets}
            for tp in partitions:
                if tp.topic not in group_topics:
                    continue
                key = (tp.topic, tp.partition)
                at = offsets.get(key, -1)
                positions[(group, tp.topic, tp.partition)] = (at if at >= 0 else low[key], high[key])
        return positions

    def _offsets(self, partitions: list[TopicPartition], spec: OffsetSpec) -> dict[tuple[str, int], int]:
        futures = self._admin.list_offsets({tp: spec for tp in partitions}, request_timeout=self._timeout)
        return {(tp.topic, tp.partition): future.result().offset for tp, future in futures.items()}

    def collect(self):
        lag = GaugeMetricFamily("sluice_consumer_lag", "Messages not yet committed by a consumer group, per partition.",
                                labels=["group", "topic", "partition"])
        up = GaugeMetricFamily("sluice_consumer_lag_up", "1 when the last lag collection succeeded.")
        try:
            for (group, topic, partition), value in sorted(self.lag().items()):
                lag.add_metric([group, topic, str(partition)], float(value))
            up.add_metric([], 1.0)
        except Exception as exc:  # a scrape must answer; the alert on lag_up tells
            log.warning("consumer lag: collection failed: %s", exc)
            up.add_metric([], 0.0)
        yield lag
        yield up
