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

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bus.logs import librdkafka_logger

log = logging.getLogger(__name__)


class LagCollector(Collector):
    def __init__(self, bootstrap: str, group_prefix: str, timeout: float = 5.0,
                 topic_prefix: str | None = None) -> None:
        """Lag of the groups named `group_prefix`…, on the topics named `topic_prefix`… (default: the same)."""
        self._admin = AdminClient({"bootstrap.servers": bootstrap, "logger": librdkafka_logger()})
        self._bootstrap = bootstrap
        self._prefix = group_prefix
        self._topic_prefix = group_prefix if topic_prefix is None else topic_prefix
        self._timeout = timeout
        self._readers: dict[str, Consumer] = {}

    def lag(self) -> dict[tuple[str, str, int], int]:
        """{(group, topic, partition): messages not yet committed}. May raise a KafkaException."""
        return {key: max(0, high - at) for key, (at, high) in self.positions().items()}

    def positions(self) -> dict[tuple[str, str, int], tuple[int, int]]:
        """{(group, topic, partition): (where the group resumes, high watermark)}; where it resumes
        is its committed offset, or the low watermark before its first commit. May raise a KafkaException."""
        listed = self._admin.list_consumer_groups(request_timeout=self._timeout).result()
        groups = sorted(g.group_id for g in listed.valid if g.group_id.startswith(self._prefix))
        if not groups:
            return {}
        metadata = self._admin.list_topics(timeout=self._timeout).topics
        # Every partition of the deployment's topics: a group's topics are those it committed on.
        candidates = [TopicPartition(t, p) for t in sorted(metadata) if t.startswith(self._topic_prefix)
                      for p in metadata[t].partitions]
        committed: dict[str, dict[tuple[str, int], int]] = {}
        for group in groups:
            offsets = self._committed_by(group).committed(candidates, timeout=self._timeout)
            committed[group] = {(tp.topic, tp.partition): tp.offset for tp in offsets if tp.offset >= 0}
        topics = {topic for offsets in committed.values() for topic, _ in offsets}
        if not topics:
            return {}
        partitions = [tp for tp in candidates if tp.topic in topics]
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

    def _committed_by(self, group: str) -> Consumer:
        """A consumer carrying `group`'s id, only to read its committed offsets: it never joins the group.

        Not the admin client's list_consumer_group_offsets: librdkafka 2.16.0 aborts the whole process
        (`rd_kafka_enq_once_del_source_return: Assertion eonce->refcnt > 0`) when the group's coordinator
        broker dies during such a request, which a cluster's broker failure made the edge do.
        """
        if group not in self._readers:
            self._readers[group] = Consumer({"bootstrap.servers": self._bootstrap, "group.id": group,
                                             "enable.auto.commit": False, "logger": librdkafka_logger()})
        return self._readers[group]

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
