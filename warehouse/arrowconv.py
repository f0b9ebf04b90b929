"""Arrow at the warehouse boundary, shared by both backends so they agree exactly.

Inserts: caller columns -> a pyarrow Table typed from the target's ClickHouse
column types (epoch-ms ints become UTC timestamps for DateTime columns).
Queries: ClickHouse's Arrow output -> column names and rows of Python values
(see backend.py for the type mapping). Pure CPU work, nothing blocks; raises
ValueError for columns that do not fit the table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

_MS_UTC = pa.timestamp("ms", tz="UTC")

_SIMPLE: dict[str, pa.DataType] = {
    "String": pa.string(),
    "Bool": pa.bool_(),
    "Float32": pa.float32(),
    "Float64": pa.float64(),
    "Date": pa.date32(),
    "Date32": pa.date32(),
    **{f"Int{n}": getattr(pa, f"int{n}")() for n in (8, 16, 32, 64)},
    **{f"UInt{n}": getattr(pa, f"uint{n}")() for n in (8, 16, 32, 64)},
}
_WRAPPED = re.compile(r"(LowCardinality|Nullable|Array)\((.*)\)\Z", re.S)


def arrow_type(ch_type: str) -> pa.DataType | None:
    """The Arrow type to build for a ClickHouse column type, or None to let
    pyarrow infer one (types this module does not need to steer)."""
    ch_type = ch_type.strip()
    wrapped = _WRAPPED.match(ch_type)
    if wrapped:
        inner = arrow_type(wrapped.group(2))
        if wrapped.group(1) != "Array":
            return inner  # LowCardinality/Nullable: same values, nulls allowed anyway
        return pa.list_(inner) if inner is not None else None
    if ch_type.startswith("DateTime"):
        # Callers hold event times as epoch milliseconds: ints are read as ms
        # whatever the column's precision; ClickHouse rescales on insert.
        return _MS_UTC
    if ch_type.startswith("FixedString"):
        return pa.string()
    return _SIMPLE.get(ch_type)


def to_arrow_table(table: str, columns: Mapping[str, Any], types: Mapping[str, str]) -> pa.Table:
    """Build the insert batch for `table` (its column types in `types`).

    Raises ValueError for no columns, a column the table lacks, unequal lengths,
    or values that do not convert to the column's type.
    """
    if not columns:
        raise ValueError(f"insert into {table}: no columns")
    unknown = [name for name in columns if name not in types]
    if unknown:
        raise ValueError(f"insert into {table}: no such column(s) {unknown}")
    arrays = {}
    for name, values in columns.items():
        try:
            arrays[name] = _array(values, arrow_type(types[name]))
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"insert into {table}: column {name} ({types[name]}): {exc}") from exc
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"insert into {table}: columns differ in length: {lengths}")
    return pa.table(arrays)


def _array(values: Any, target: pa.DataType | None) -> pa.Array | pa.ChunkedArray:
    if not isinstance(values, (pa.Array, pa.ChunkedArray)):
        return pa.array(values, type=target)
    if target is None or values.type == target:
        return values
    if pa.types.is_dictionary(values.type) and values.type.value_type == target:
        return values  # ClickHouse reads dictionaries as they are (into LowCardinality without re-hashing)
    if pa.types.is_timestamp(target) and pa.types.is_integer(values.type):
        values = values.cast(pa.int64())  # int -> timestamp casts only from int64
    return values.cast(target)


def to_rows(result: pa.Table) -> tuple[tuple[str, ...], list[tuple]]:
    """Column names and rows (tuples of Python values) of an Arrow result."""
    columns = [_python_values(column) for column in result.columns]
    return tuple(result.column_names), list(zip(*columns)) if columns else []


def _python_values(column: pa.ChunkedArray) -> list[Any]:
    kind = column.type
    if pa.types.is_timestamp(kind):
        # One representation for every top-level instant: an aware datetime with
        # tzinfo=timezone.utc (what "+00:00" converts to; a naive column is read
        # as UTC), at most microseconds (Python's datetime cannot hold ns).
        unit = "us" if kind.unit == "ns" else kind.unit
        column = column.cast(pa.timestamp(unit, tz="+00:00"), safe=False)
    return column.to_pylist()
