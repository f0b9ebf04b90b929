"""The ingest-log sink: Verdict messages (results topic) → the ingest_log table."""

from __future__ import annotations

import schemas
from config import Settings
from sinks.batching import BatchingSink
from sinks.ingest_log import ingest_log_columns
from sinks.record_sink import record_sink
from warehouse.backend import Warehouse


def ingest_log_sink(settings: Settings, bootstrap: str, warehouse: Warehouse) -> BatchingSink:
    """Consumer group `{prefix}sink-ingest-log`; one row per verdict (a replayed
    request adds a newer row, which ReplacingMergeTree(processed_at) keeps)."""
    return record_sink(settings, bootstrap, warehouse, name="sink-ingest-log",
                       topic=schemas.Topics(settings.topic_prefix).results, schema=schemas.VERDICT,
                       tables={"ingest_log": ingest_log_columns})
