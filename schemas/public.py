"""The public ingest topic's Avro contract: the frames reader schema Sluice ships
(avro/public/frames.avsc) and the Confluent Schema Registry wire format producers
frame their values in (magic byte 0, 4-byte big-endian schema id, Avro binary).

Unlike the internal topics (schemas.codec), the writer schema is the producer's,
found in a registry by id; a value is read with Avro schema resolution against
the reader schema, so producers may add fields or widen types compatibly.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import struct
from functools import cache
from importlib import resources

import fastavro

WIRE_MAGIC = 0
WIRE_HEADER = 5  # magic byte + schema id
FRAMES_CONTENT_TYPE = "application/vnd.sluice.frames+avro"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MS = dt.timedelta(milliseconds=1)


@cache
def frames_schema_text() -> str:
    """The reader schema, as registered under `<prefix>ingest-value`."""
    return resources.files("schemas").joinpath("avro", "public", "frames.avsc").read_text()


@cache
def _reader() -> dict:
    return fastavro.parse_schema(json.loads(frames_schema_text()))


@cache
def parsed_writer(text: str) -> dict:
    """A writer schema's parsed form, once per text (ids are immutable, so texts recur).
    Raises ValueError (fastavro's SchemaParseException included) for an invalid schema."""
    return fastavro.parse_schema(json.loads(text))


def wire_schema_id(value: bytes | None) -> int | None:
    """The schema id of a value framed in the wire format, else None."""
    if value is None or len(value) < WIRE_HEADER or value[0] != WIRE_MAGIC:
        return None
    return struct.unpack(">I", value[1:WIRE_HEADER])[0]


def frames_body(value: bytes, writer_schema: str) -> dict:
    """The frames body (seed 001's JSON shape) of a wire-format value written with
    `writer_schema`. Raises ValueError (or fastavro's errors) if it does not decode
    or does not resolve to the reader schema."""
    record = fastavro.schemaless_reader(io.BytesIO(value[WIRE_HEADER:]), parsed_writer(writer_schema), _reader())
    # timestamp-millis comes back as a datetime: the rulebook speaks epoch milliseconds.
    return {"frames": [{"timestamp": _millis(frame["timestamp"]), "metrics": frame["metrics"]}
                       for frame in record["frames"]]}


def _millis(value: dt.datetime | int) -> int:
    if isinstance(value, dt.datetime):
        return (value - _EPOCH) // _MS
    return value
