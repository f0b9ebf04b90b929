"""Avro single-object encoding for every internal topic.

Each message starts with the two marker bytes C3 01 and the 8-byte little-endian
CRC-64-AVRO fingerprint of its schema's canonical form, so a reader knows which
schema wrote it without a registry.

Schemas evolve compatibly (new fields nullable, with a default). Each older
version stays in avro/history/, so a message written with it (say, on a
compacted topic) is still read: fastavro resolves its writer schema to the
current one, filling new fields with their defaults.
"""

from __future__ import annotations

import io
import json
import struct
from functools import cache
from importlib import resources
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

MAGIC = b"\xc3\x01"
HEADER_SIZE = 10

_FILES = {
    "sluice.RawEnvelope": "raw_envelope.avsc",
    "sluice.FrameBatch": "frames.avsc",
    "sluice.Verdict": "results.avsc",
    "sluice.DeadLetter": "deadletter.avsc",
    "sluice.CatalogRecord": "catalog_record.avsc",
    "sluice.RecordBatch": "records.avsc",
}


class SchemaMismatch(ValueError):
    """The message is not single-object Avro, or was written with another schema."""


@cache
def parsed_schema(name: str) -> dict:
    text = resources.files("schemas").joinpath("avro", _FILES[name]).read_text()
    return fastavro.parse_schema(json.loads(text))


def _header_of(schema: dict) -> bytes:
    digest = int(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"), 16)
    return MAGIC + struct.pack("<Q", digest)


@cache
def _header(name: str) -> bytes:
    return _header_of(parsed_schema(name))


@cache
def older_schemas(name: str) -> dict[bytes, dict]:
    """The older versions of schema `name` kept in avro/history/, by their header."""
    found = {}
    for file in resources.files("schemas").joinpath("avro", "history").iterdir():
        if file.name.endswith(".avsc"):
            schema = json.loads(file.read_text())
            if f"{schema.get('namespace', '')}.{schema['name']}".lstrip(".") == name:
                parsed = fastavro.parse_schema(schema)
                found[_header_of(parsed)] = parsed
    return found


def encode(name: str, record: dict[str, Any]) -> bytes:
    """Encode one record; raises ValueError/TypeError if it does not fit the schema."""
    out = io.BytesIO()
    out.write(_header(name))
    fastavro.schemaless_writer(out, parsed_schema(name), record)
    return out.getvalue()


def decode(name: str, payload: bytes) -> dict[str, Any]:
    """Decode one record written with schema `name` or an older version of it, as the
    current version; raises SchemaMismatch for foreign bytes or another schema."""
    writer = _writer(name, payload)
    reader = None if writer is parsed_schema(name) else parsed_schema(name)
    return _read(payload, writer, reader)


def decode_as_written(name: str, payload: bytes) -> tuple[bool, dict[str, Any]]:
    """(written with the current version?, the record in its writer's own shape).

    For a schema whose versions Avro cannot resolve into each other (a field that
    changed type), so the caller converts an older record itself. Raises like decode().
    """
    writer = _writer(name, payload)
    return writer is parsed_schema(name), _read(payload, writer, None)


def _writer(name: str, payload: bytes) -> dict:
    header = payload[:HEADER_SIZE]
    writer = parsed_schema(name) if header == _header(name) else older_schemas(name).get(header)
    if writer is None:
        if payload[:2] != MAGIC:
            raise SchemaMismatch("not an Avro single-object message")
        raise SchemaMismatch(f"message was written with another schema than {name}")
    return writer


def _read(payload: bytes, writer: dict, reader: dict | None) -> dict[str, Any]:
    stream = io.BytesIO(payload)
    stream.seek(HEADER_SIZE)
    return fastavro.schemaless_reader(stream, writer, reader)


def is_avro(payload: bytes) -> bool:
    return payload[:2] == MAGIC
