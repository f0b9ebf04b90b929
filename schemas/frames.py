"""The frames topic's message: a FrameBatch Avro envelope around Arrow columns.

The envelope (request, org, thing, type version, version, frame count) is Avro
single-object encoding like every topic's; the readings and the locations are
each one Arrow IPC stream (schema, dictionaries, one record batch) inside an
Avro `bytes` field. The Arrow schemas are fixed by the FrameBatch version the
fingerprint names (READINGS and LOCATIONS below): a stream with other columns
is refused. Why Arrow: the sink then concatenates buffers and hands them
to ClickHouse without touching a value (see schemas/README.md).

A message written by an older processor (FrameBatch version 1: the same
columns as Avro arrays) is decoded into the same shape.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from schemas.codec import decode_as_written, encode as encode_avro

NAME = "sluice.FrameBatch"

# Metric ids and data types repeat within a request: dictionary-encoded, they cost an
# index per value instead of the string (a message of 1000 values: 67 KB -> 41 KB),
# and ClickHouse takes a dictionary straight into its LowCardinality columns.
_CODES = pa.dictionary(pa.int32(), pa.string())
READINGS = pa.schema([
    ("ts", pa.timestamp("ms", tz="UTC")),  # event time
    ("metric_id", _CODES),
    ("data_type", _CODES),  # Double, Long, Boolean or String
    ("value", pa.float64()),
    ("value_long", pa.int64()),
    ("value_string", pa.string()),
])
LOCATIONS = pa.schema([
    ("ts", pa.timestamp("ms", tz="UTC")),
    ("latitude", pa.float64()),
    ("longitude", pa.float64()),
    ("accuracy_m", pa.float64()),  # null when the frame gave none
])
FIELDS = ("request_id", "org_id", "thing_id", "type_version_id", "version", "frames")

EMPTY_READINGS = pa.RecordBatch.from_pylist([], READINGS)
EMPTY_LOCATIONS = pa.RecordBatch.from_pylist([], LOCATIONS)


def readings_batch(readings: dict[str, list]) -> pa.RecordBatch:
    """The readings columns a rulebook built (lists by column name) as Arrow.

    A rulebook's processors.columns.Readings builds its batch itself, from its metrics (no
    per-row lists); a plain dict is built from its lists.
    Raises pyarrow's errors (TypeError, ArrowInvalid) for values of the wrong type.
    """
    build = getattr(readings, "batch", None)
    if build is not None:
        return build()
    return pa.RecordBatch.from_arrays([_array(readings[f.name], f.type) for f in READINGS], schema=READINGS)


def _array(values: list, kind: pa.DataType) -> pa.Array:
    if pa.types.is_dictionary(kind):
        return pa.array(values, kind.value_type).dictionary_encode()
    return pa.array(values, kind)


def locations_batch(locations: list[dict]) -> pa.RecordBatch:
    """A rulebook's located frames (one dict per location) as Arrow."""
    if not locations:
        return EMPTY_LOCATIONS
    return pa.RecordBatch.from_arrays([pa.array([where[f.name] for where in locations], f.type) for f in LOCATIONS],
                                      schema=LOCATIONS)


def encode(batch: dict[str, Any], readings: pa.RecordBatch | None = None,
           locations: pa.RecordBatch | None = None) -> bytes:
    """One FrameBatch message: `batch`'s own fields, with `readings` and `locations`
    (Arrow, READINGS/LOCATIONS schemas) or else batch's own list columns converted."""
    readings = readings_batch(batch["readings"]) if readings is None else readings
    locations = locations_batch(batch["locations"]) if locations is None else locations
    return encode_avro(NAME, {**{name: batch[name] for name in FIELDS},
                              "readings": _ipc(readings), "locations": _ipc(locations)})


def _ipc(batch: pa.RecordBatch) -> bytes:
    if not batch.num_rows:
        return b""  # most frames carry no location
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def decode(payload: bytes) -> dict[str, Any]:
    """A FrameBatch message of any known version: its fields, with `readings` and
    `locations` as Arrow record batches (READINGS, LOCATIONS).

    Raises schemas.SchemaMismatch for foreign bytes, ValueError/EOFError for
    truncated Avro or a broken Arrow body.
    """
    current, record = decode_as_written(NAME, payload)
    if current:
        record["readings"] = _read(record["readings"], READINGS, EMPTY_READINGS)
        record["locations"] = _read(record["locations"], LOCATIONS, EMPTY_LOCATIONS)
    else:  # version 1: Avro arrays of the same columns
        record["readings"] = readings_batch(record["readings"])
        record["locations"] = locations_batch(record["locations"])
    return record


def _read(body: bytes, schema: pa.Schema, empty: pa.RecordBatch) -> pa.RecordBatch:
    if not body:
        return empty
    try:
        reader = pa.ipc.open_stream(body)
        if reader.schema != schema:
            raise ValueError(f"FrameBatch: Arrow columns {reader.schema} are not the contract's {schema}")
        batch = reader.read_next_batch()
        batch.validate()  # a corrupt body must fail here, not inside ClickHouse
    except (pa.ArrowException, OSError, StopIteration) as exc:  # pyarrow reports a bad message as an IO error
        raise ValueError(f"FrameBatch: the Arrow columns do not decode: {exc}") from None
    return batch
