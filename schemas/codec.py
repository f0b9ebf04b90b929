"""Avro single-object encoding for every internal topic.

Each message starts with the two marker bytes C3 01 and the 8-byte little-endian
CRC-64-AVRO fingerprint of its schema's canonical form, so a reader knows which
schema wrote it without a registry.
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
}


class SchemaMismatch(ValueError):
    """The message is not single-object Avro, or was written with another schema."""


@cache
def parsed_schema(name: str) -> dict:
    text = resources.files("schemas").joinpath("avro", _FILES[name]).read_text()
    return fastavro.parse_schema(json.loads(text))


@cache
def _header(name: str) -> bytes:
    canonical = to_parsing_canonical_form(parsed_schema(name))
    digest = int(fingerprint(canonical, "CRC-64-AVRO"), 16)
    return MAGIC + struct.pack("<Q", digest)


def encode(name: str, record: dict[str, Any]) -> bytes:
    """Encode one record; raises ValueError/TypeError if it does not fit the schema."""
    out = io.BytesIO()
    out.write(_header(name))
    fastavro.schemaless_writer(out, parsed_schema(name), record)
    return out.getvalue()


def decode(name: str, payload: bytes) -> dict[str, Any]:
    """Decode one record; raises SchemaMismatch for foreign bytes or another schema."""
    if payload[:HEADER_SIZE] != _header(name):
        if payload[:2] != MAGIC:
            raise SchemaMismatch("not an Avro single-object message")
        raise SchemaMismatch(f"message was written with another schema than {name}")
    stream = io.BytesIO(payload)
    stream.seek(HEADER_SIZE)
    return fastavro.schemaless_reader(stream, parsed_schema(name), None)


def is_avro(payload: bytes) -> bool:
    return payload[:2] == MAGIC
