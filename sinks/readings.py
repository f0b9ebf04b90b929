"""Frames → readings and locations rows: pure functions from decoded frame batches
(schemas.frames.decode: Arrow columns) to Arrow columns.

No value is touched in Python: the messages' Arrow columns are concatenated
(dictionaries unified), and each message's own fields (org, thing, ...)
become a dictionary column of their distinct values, indexed per row, so
the cost per row is a few numpy ops whatever the batch holds.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

COLUMNS = ("org_id", "thing_id", "metric_id", "ts", "data_type", "value", "value_long",
           "value_string", "type_version_id", "request_id", "version")
LOCATION_COLUMNS = ("org_id", "thing_id", "ts", "latitude", "longitude", "accuracy_m", "request_id", "version")

# Each message's own fields, repeated on each of its rows.
_REPEATED = ("org_id", "thing_id", "type_version_id", "request_id")


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
    # One chunk per column (the dictionaries unified, indices remapped): chDB misreads a table
    # whose columns are chunked differently.
    table = pa.Table.from_batches([p for p in parts if p.num_rows]).combine_chunks()
    columns = {}
    for name in names:
        if name in _REPEATED:
            columns[name] = _repeated([batch[name] for batch in batches], counts)
        elif name == "version":
            columns[name] = pa.array(np.repeat(np.fromiter((batch["version"] for batch in batches), np.uint64,
                                                           len(batches)), counts))
        else:
            columns[name] = table.column(name).chunk(0)
    return columns


def _repeated(values: list[str], counts: np.ndarray) -> pa.DictionaryArray:
    """values[i] repeated counts[i] times, as a dictionary of the distinct values
    (ClickHouse refuses a dictionary with duplicates for a LowCardinality column)."""
    codes: dict[str, int] = {}
    per_message = np.fromiter((codes.setdefault(value, len(codes)) for value in values), np.int32, len(values))
    return pa.DictionaryArray.from_arrays(pa.array(np.repeat(per_message, counts)), pa.array(list(codes), pa.string()))
