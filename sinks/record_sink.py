"""One Avro topic → warehouse tables: the shape every warehouse sink shares.

Each sink differs only in its topic, record schema, consumer group and the
pure functions that turn decoded records into each table's columns.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any, Callable

import schemas
from bus import metrics
from config import Settings
from sinks.chain import SinkPolicy
from sinks.consumer_loop import SinkConsumer
from warehouse.backend import Warehouse

log = logging.getLogger(__name__)

BuildColumns = Callable[[list[dict]], dict[str, Any]]  # column name -> list or Arrow array
Decode = Callable[[bytes], dict]  # one message value -> its record; raises for bytes that do not decode


def record_sink(settings: Settings, bootstrap: str, warehouse: Warehouse, *, name: str, topic: str,
                schema: str, tables: dict[str, BuildColumns], decode: Decode | None = None) -> SinkConsumer:
    """A SinkConsumer decoding `schema` records from `topic` into each of `tables`.

    Its consumer group is `{topic_prefix}{name}`, so each sink keeps its own
    offsets. A message that does not decode is logged and skipped (it would
    fail every retry); the insert raises, and the chain retries it, if the
    warehouse refuses the batch. Each table's insert has its own dedup token,
    so a retry after a partial failure re-inserts nothing twice. `decode`
    replaces the plain Avro decoding for a topic whose messages carry more
    than Avro (the frames' Arrow columns).
    """
    decode = decode or partial(schemas.decode, schema)

    def insert(values: list[bytes], token: str) -> int:
        records = []
        for value in values:
            if value is None:
                continue  # a tombstone on a compacted topic: nothing to insert
            try:
                records.append(decode(value))
            except (schemas.SchemaMismatch, ValueError, EOFError) as exc:  # pa.ArrowInvalid is a ValueError
                log.error("%s: skipping a message that does not decode as %s: %s", name, schema, exc)
        counts = {}
        for table, build in tables.items():
            columns = build(records)
            counts[table] = len(next(iter(columns.values()), ()))
            if counts[table]:
                warehouse.insert(table, columns, dedup_token=f"{token}:{table}")
        # Counted once every table took the batch: a retry after a partial failure counts nothing twice.
        for table, count in counts.items():
            metrics.TABLE_ROWS.labels(table).inc(count)
        return sum(counts.values())

    return SinkConsumer(bootstrap, f"{settings.topic_prefix}{name}", topic, insert, SinkPolicy.from_settings(settings),
                        name=name, instance_id=settings.instance_id)
