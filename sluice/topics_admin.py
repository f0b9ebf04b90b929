"""Creates the pipeline's topics with explicit partitions and configs."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from config import Settings
from schemas.topics import SPECS, Topics, topic_configs

log = logging.getLogger(__name__)


def ensure_topics(bootstrap: str, settings: Settings, replication: int = 1, timeout: float = 30) -> None:
    """Create missing topics; existing ones are left as they are. Raises KafkaException."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = Topics(settings.topic_prefix)
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [
        NewTopic(topics.name(spec.logical),
                 num_partitions=1 if spec.single_partition else settings.partitions,
                 replication_factor=replication,
                 config=topic_configs(spec))
        for spec in SPECS
        if topics.name(spec.logical) not in existing
    ]
    if not wanted:
        return
    for name, future in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            future.result()
            log.info("created topic %s", name)
        except KafkaException as exc:
            if exc.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS: another process won the race
                raise
