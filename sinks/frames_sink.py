"""The frames sink: FrameBatch messages → the readings table."""

from __future__ import annotations

import schemas
from config import Settings
from sinks.batching import BatchingSink
from sinks.readings import readings_columns
from warehouse.backend import Warehouse


def frames_sink(settings: Settings, bootstrap: str, warehouse: Warehouse) -> BatchingSink:
    topics = schemas.Topics(settings.topic_prefix)

    def insert(values: list[bytes], token: str) -> int:
        batches = [schemas.decode(schemas.FRAME_BATCH, v) for v in values]
        columns = readings_columns(batches)
        rows = len(columns["ts"])
        if rows:
            warehouse.insert("readings", columns, dedup_token=token)
        return rows

    return BatchingSink(bootstrap, f"{settings.topic_prefix}sink-readings", topics.frames, insert,
                        max_messages=settings.sink_batch_messages,
                        max_bytes=settings.sink_batch_bytes, max_ms=settings.sink_batch_ms, name="readings-sink")
