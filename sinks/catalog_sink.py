"""The catalog mirror: the compacted catalog topic → the dimension tables."""

from __future__ import annotations

import schemas
from config import Settings
from sinks.batching import BatchingSink
from sinks.catalog_dims import TABLES
from sinks.record_sink import record_sink
from warehouse.backend import Warehouse


def catalog_sink(settings: Settings, bootstrap: str, warehouse: Warehouse) -> BatchingSink:
    """Consumer group `{prefix}sink-catalog`; rows carry updated_at, so a re-mirror overwrites."""
    return record_sink(settings, bootstrap, warehouse, name="sink-catalog",
                       topic=schemas.Topics(settings.topic_prefix).catalog, schema=schemas.CATALOG_RECORD,
                       tables=TABLES)
