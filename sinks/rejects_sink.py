"""The rejects sink: DeadLetter messages (deadletter topic) → the rejects table."""

from __future__ import annotations

import schemas
from config import Settings
from sinks.batching import BatchingSink
from sinks.record_sink import record_sink
from sinks.rejects import rejects_columns
from warehouse.backend import Warehouse


def rejects_sink(settings: Settings, bootstrap: str, warehouse: Warehouse) -> BatchingSink:
    """Consumer group `{prefix}sink-rejects`; one row per dead letter."""
    return record_sink(settings, bootstrap, warehouse, name="sink-rejects",
                       topic=schemas.Topics(settings.topic_prefix).deadletter, schema=schemas.DEAD_LETTER,
                       tables={"rejects": rejects_columns})
