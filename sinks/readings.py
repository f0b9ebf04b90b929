"""Frames → readings and locations rows: pure functions from decoded frame batches
(schemas.frames.decode: Arrow columns) to Arrow columns.

No value is touched in Python: each message's Arrow columns are concatenated,
and the batch's own fields (org, thing, ...) are repeated per row by an index
take, so the cost per row is a few memcpys whatever the batch holds.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

COLUMNS = ("org_id", "thing_id", "metric_id", "ts", "data_type", "value", "value_long",
           "value_string", "type_version_id", "request_id", "version")
LOCATION_COLUMNS = ("org_id", "thing_id", "ts", "latitude", "longitude", "accuracy_m", "request_id", "version")

# Each message's own fields, repeated on each of its rows, with their Arrow types.
_REPEATED = {"org_id": pa.string(), "thing_id": pa.string(), "type_version_id": pa.string(),
             "request_id": pa.string(), "version": pa.uint64()}


def readings_columns(batches: list[dict]) -> dict[str, pa.Array]:
    """One readings row per metric value of every batch."""
    return _columns(batches, "readings", COLUMNS)


def locations_columns(batches: list[dict]) -> dict[str, pa.Array]:
    """One locations row per frame that carried a location."""
    return _columns(batches, "locations", LOCATION_COLUMNS)


def _columns(batches: list[dict], part: str, names: tuple[str, ...]) -> dict[str, pa.Array]:
    parts = [batch[part] for batch in batches]
    counts = np.fromiter((p.num_rows for p in parts), dtype=np.int64, count=len(parts))
    if not counts.sum():
        return {}
    table = pa.Table.from_batches([p for p in parts if p.num_rows]).combine_chunks()
    owner = pa.array(np.repeat(np.arange(len(batches)), counts))  # row -> index of its batch
    columns = {}
    for name in names:
        if name in _REPEATED:
            columns[name] = pa.array([batch[name] for batch in batches], _REPEATED[name]).take(owner)
        else:
            columns[name] = table.column(name).chunk(0)
    return columns
