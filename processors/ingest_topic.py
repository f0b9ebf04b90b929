"""One message of the public ingest topic → the raw envelope its rulebook judges, or its rejection.

Outside producers write with their own clients (docs/producers.md): key = thing id,
value = a frames body (JSON, or Avro in the schema registry's wire format) or a
template payload (JSON, with `sluice-template`), headers naming the API key and
optionally the thing, the idempotency key and the content type. This module is
the only difference from an HTTP request: it does what the edge does before
`submit` (the key, its scope and reach over the thing) and builds the same envelope,
so the same rulebooks, idempotency, verdicts and dead letters follow. (A JSON value
is parsed here to check it; the envelope keeps the document, processors.json_body.)

Pure: the catalog, key check and writer schemas come in as arguments (the
processor looks schemas up in the registry first, since that is I/O that may wait).

Trust: the message's producer is whoever holds the API key; the org is the key's.
The plaintext key is only ever hashed here: it is in no envelope, verdict or dead letter.
Rejections before a request could be formed (no key, a bad key, no write rights,
bytes that are not a request) have the route `unknown`, which `sluice replay`
skips: such a message must be produced again, with a valid key, not replayed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import orjson

from catalog import keys
from catalog.brief import brief
from processors import json_body
from processors.outcome import NOT_A_REQUEST, Outcome, Rejection, rejected
from schemas.public import FRAMES_CONTENT_TYPE, frames_body, wire_schema_id

API_KEY = "sluice-api-key"
THING_ID = "sluice-thing-id"
IDEMPOTENCY_KEY = "sluice-idempotency-key"
TEMPLATE = "sluice-template"
CONTENT_TYPE = "content-type"
JSON_CONTENT_TYPE = "application/json"
MAX_IDEMPOTENCY_KEY = 255  # as the edge's Idempotency-Key

Authenticate = Callable[[str], "tuple[str, dict] | None"]  # plaintext key -> (org id, key body)
Lookup = Callable[..., "dict | None"]  # (kind, id, org) -> catalog entity
# schema id -> the writer schema's text, or why there is none (the registry's 404, no registry)
WriterSchemas = dict[int, "str | UnknownSchemaId"]


@dataclass(frozen=True)
class UnknownSchemaId:
    reason: str


@dataclass(frozen=True)
class IngestMessage:
    """What the processor reads of one ingest-topic message (header names lower-cased)."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]

    @classmethod
    def of(cls, partition: int, offset: int, timestamp_ms: int, key: bytes | None, value: bytes | None,
           headers) -> "IngestMessage":
        named = {name.lower(): value or b"" for name, value in headers or ()}  # a repeated header: the last
        return cls(partition, offset, timestamp_ms, key, value, named)


def request_id(partition: int, offset: int) -> str:
    """A message's request id: a function of where it is, so a replay after a crash writes the
    same verdict and readings again (collapsed downstream) instead of a second request."""
    return f"kafka-{partition}-{offset}"


def schema_id(message: IngestMessage) -> int | None:
    """The registry schema id the message's value needs, if it is a wire-format Avro value."""
    if TEMPLATE in message.headers or _content_type(message) == JSON_CONTENT_TYPE:
        return None
    return wire_schema_id(message.value)


def translate(message: IngestMessage, authenticate: Authenticate, get: Lookup, writer_schemas: WriterSchemas,
              max_body_bytes: int) -> dict | Outcome:
    """The raw envelope of `message`, or the Outcome (verdict + dead letter) of its rejection."""
    envelope = {
        "request_id": request_id(message.partition, message.offset),
        "org_id": "",
        "key_id": None,
        "route": NOT_A_REQUEST,
        # The broker's timestamp, not the clock: a replay after a crash judges the same request again.
        "received_at": message.timestamp_ms,
        "thing_id": None,
        "stream": None,
        "template_id": None,
        "idempotency_key": None,
        "content_type": JSON_CONTENT_TYPE,
        "catalog_offset": -1,  # no edge saw this catalog: the processor catches up to the catalog's end
        "body": message.value or b"",
    }
    try:
        return _translate(message, envelope, authenticate, get, writer_schemas, max_body_bytes)
    except Rejection as rejection:
        return rejected(envelope, rejection, 0, int(time.time() * 1000))


def _translate(message: IngestMessage, envelope: dict, authenticate: Authenticate, get: Lookup,
               writer_schemas: WriterSchemas, max_body_bytes: int) -> dict:
    """Fills `envelope` as it learns who sent what; raises Rejection."""
    headers = message.headers
    thing_id = _thing_id(message)
    envelope["thing_id"] = thing_id
    secret = headers.get(API_KEY)
    if not secret:
        raise Rejection(401, "MISSING_API_KEY", f"the {API_KEY} header is missing", field=API_KEY)
    found = authenticate(secret.decode("utf-8", "replace"))
    if found is None:
        raise Rejection(401, "INVALID_API_KEY", "invalid or revoked API key", field=API_KEY)
    org_id, key = found
    envelope["org_id"], envelope["key_id"] = org_id, key["id"]
    if not keys.allows(key, "write"):
        raise Rejection(403, "FORBIDDEN", "this key lacks the 'write' scope", field=API_KEY)
    if thing_id is None:
        raise Rejection(400, "INVALID_PAYLOAD", f"no thing id: give the message key or the {THING_ID} header",
                        field="key")
    thing = get("thing", thing_id, org_id)
    if thing is not None and not keys.may_use_thing(key, thing):
        raise Rejection(403, "FORBIDDEN", f"this key's filters do not cover thing {brief(thing_id)}", field="key")
    # An unknown thing is the rulebook's THING_NOT_FOUND, as for HTTP requests the edge let through.
    idempotency_key = headers.get(IDEMPOTENCY_KEY)
    if idempotency_key is not None:
        idempotency_key = _text(idempotency_key, IDEMPOTENCY_KEY)
        if not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
            raise Rejection(400, "INVALID_PAYLOAD", f"{IDEMPOTENCY_KEY} must be 1–{MAX_IDEMPOTENCY_KEY} characters",
                            field=IDEMPOTENCY_KEY)
    body, parsed = _body(message, writer_schemas)
    if len(body) > max_body_bytes:  # an Avro value grows as JSON; the edge's limit holds for both
        raise Rejection(413, "TOO_LARGE", f"the frames body is {len(body)} bytes as JSON, over the "
                        f"{max_body_bytes}-byte limit", field="value")
    template = headers.get(TEMPLATE)
    route = "thing_data"
    if template is not None:
        route = "thing_template"
        envelope["template_id"] = _text(template, TEMPLATE)  # tmpl_…, or tmpl_…@revision
    envelope.update(route=route, idempotency_key=idempotency_key, body=body, **parsed)
    return envelope


def _thing_id(message: IngestMessage) -> str | None:
    named = message.headers.get(THING_ID)
    key = _text(message.key, "key") if message.key else None
    header = _text(named, THING_ID) if named else None
    if key is not None and header is not None and key != header:
        raise Rejection(400, "INVALID_PAYLOAD", f"the message key {brief(key)} and the {THING_ID} header "
                        f"{brief(header)} name different things", field=THING_ID)
    return key or header


def _content_type(message: IngestMessage) -> str | None:
    named = message.headers.get(CONTENT_TYPE)
    return named.decode("latin-1").split(";")[0].strip().lower() if named else None


def _body(message: IngestMessage, writer_schemas: WriterSchemas) -> tuple[bytes, dict]:
    """The request body in the rulebook's JSON shape, and envelope fields to add: a JSON
    value as it is, with the document parsed to check it (json_body.PARSED); a wire-format
    Avro value decoded and written as the frames JSON body, which the rulebook parses."""
    value = message.value or b""
    content_type = _content_type(message)
    if content_type not in (None, JSON_CONTENT_TYPE, FRAMES_CONTENT_TYPE):
        raise Rejection(400, "UNDECODABLE", f"content-type {brief(content_type)} is neither {JSON_CONTENT_TYPE} "
                        f"nor {FRAMES_CONTENT_TYPE}", field=CONTENT_TYPE)
    schema_of = schema_id(message)
    if schema_of is None:
        if content_type == FRAMES_CONTENT_TYPE:
            raise Rejection(400, "UNDECODABLE", "the value is not in the schema registry's wire format "
                            "(magic byte 0, 4-byte schema id, Avro binary)", field="value")
        try:
            return value, {json_body.PARSED: orjson.loads(value)}
        except orjson.JSONDecodeError as exc:
            raise Rejection(400, "UNDECODABLE", f"the value is neither JSON nor wire-format Avro ({exc})",
                            field="value") from None
    writer = writer_schemas.get(schema_of)
    if writer is None or isinstance(writer, UnknownSchemaId):
        reason = writer.reason if writer is not None else f"schema id {schema_of} was not looked up"
        raise Rejection(400, "UNKNOWN_SCHEMA", reason, field="value")
    try:  # the rulebook parses this JSON rather than take the record: it judges what JSON carries (NaN as null)
        return orjson.dumps(frames_body(value, writer)), {}
    except Exception as exc:  # fastavro raises many kinds for bytes that do not fit their schema
        raise Rejection(400, "UNDECODABLE", f"the Avro value (schema id {schema_of}) does not decode as "
                        f"sluice.public.Frames: {type(exc).__name__}: {exc}", field="value") from None


def _text(raw: bytes, field: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejection(400, "INVALID_PAYLOAD", f"{field} is not UTF-8", field=field) from None
