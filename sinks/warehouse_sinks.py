"""The sinks that feed the warehouse: one line per sink, and the function that builds them.

A sink is a topic, the Avro record its messages carry, and the pure column
builders of the tables it fills (one module per table's builder); every sink runs
the same chain (sinks.chain) with the batch policy of the settings. Each runs in
its own consumer group, `{topic_prefix}{name}`, so each keeps its own offsets.
"""

from __future__ import annotations

from dataclasses import dataclass

import schemas
from schemas import frames
from config import Settings
from sinks.catalog_dims import TABLES as DIMENSION_TABLES
from sinks.consumer_loop import SinkConsumer
from sinks.ingest_log import ingest_log_columns
from sinks.readings import locations_columns, readings_columns
from sinks.record_sink import BuildColumns, Decode, record_sink
from sinks.records import RECORD_TABLES
from sinks.rejects import rejects_columns
from warehouse.backend import Warehouse


@dataclass(frozen=True)
class SinkSpec:
    name: str  # also the consumer group's suffix
    topic: str  # logical topic name (schemas.topics)
    schema: str  # the Avro record its messages carry
    tables: dict[str, BuildColumns]
    decode: Decode | None = None  # None: plain Avro of `schema`


SINKS = (
    # One readings row per metric value, one locations row per located frame; the frames
    # carry them as Arrow columns (schemas.frames), of either FrameBatch version.
    SinkSpec("sink-readings", schemas.topics.FRAMES, schemas.FRAME_BATCH,
             {"readings": readings_columns, "locations": locations_columns}, decode=frames.decode),
    # One row per verdict; a replayed request adds a newer row, which ReplacingMergeTree(processed_at) keeps.
    SinkSpec("sink-ingest-log", schemas.topics.RESULTS, schemas.VERDICT, {"ingest_log": ingest_log_columns}),
    # One row per dead letter.
    SinkSpec("sink-rejects", schemas.topics.DEADLETTER, schemas.DEAD_LETTER, {"rejects": rejects_columns}),
    # Rows of the dialects' own tables, each message naming its table.
    SinkSpec("sink-records", schemas.topics.RECORDS, schemas.RECORD_BATCH, RECORD_TABLES),
    # The catalog mirror: rows carry updated_at, so a re-mirror overwrites.
    SinkSpec("sink-catalog", schemas.topics.CATALOG, schemas.CATALOG_RECORD, DIMENSION_TABLES),
)


def build_sink(spec: SinkSpec, settings: Settings, bootstrap: str, warehouse: Warehouse) -> SinkConsumer:
    return record_sink(settings, bootstrap, warehouse, name=spec.name,
                       topic=schemas.Topics(settings.topic_prefix).name(spec.topic), schema=spec.schema,
                       tables=spec.tables, decode=spec.decode)


def warehouse_sinks(settings: Settings, bootstrap: str, warehouse: Warehouse) -> list[SinkConsumer]:
    """The sinks a warehouse-owning process runs."""
    return [build_sink(spec, settings, bootstrap, warehouse) for spec in SINKS]
