"""The frames sink: FrameBatch messages → the readings table."""

from __future__ import annotations

import schemas
from config import Settings
from sinks.batching import BatchingSink
from sinks.readings import locations_columns, readings_columns
from sinks.record_sink import record_sink
from warehouse.backend import Warehouse


def frames_sink(settings: Settings, bootstrap: str, warehouse: Warehouse) -> BatchingSink:
    """Consumer group `{prefix}sink-readings`; one readings row per metric value, one locations row per located frame."""
    return record_sink(settings, bootstrap, warehouse, name="sink-readings",
                       topic=schemas.Topics(settings.topic_prefix).frames, schema=schemas.FRAME_BATCH,
                       tables={"readings": readings_columns, "locations": locations_columns})
