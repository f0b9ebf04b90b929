"""Seed 002's dialect: `POST /api/ingest` pushes items (JSON objects) to a record stream.

The caller's key names the stream: a key whose `filters.streams` names exactly
one stream writes that stream. A key naming several, or an unfiltered key (an
org admin's, say, which reaches every stream of its org), names it with the
`X-Stream` header or `?stream=`. A stream the key does not reach, or that its
org does not have, is 404 STREAM_NOT_FOUND. `X-Item-Key` names the field that
identifies an item; the processor (processors/items.py) holds the rulebook.

The edge checks the key, the stream, the rate and the body's outline (one JSON
object, or a non-empty array of objects), answers 202 once Kafka has the request
durably, and lands it on the raw topic as the route's document
`{"itemKey": <X-Item-Key or null>, "items": <the body, verbatim>}`, so a replay
or an Idempotency-Key repeat sees exactly what the client sent, header included.
Every answer on this path, errors included, is in the seed's shape:
`{"success": true, "data": {...}}` or `{"success": false, "error": {"code", "message", "details"}}`.
"""

from __future__ import annotations

import re

import orjson
from fastapi import Depends, Query, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRouter

from catalog import keys
from catalog.brief import brief
from catalog.models import NAME_MAX
from producers.dialects.dialect import Dialect
from producers.edge.auth import Principal, principal
from producers.edge.errors import ApiError
from producers.edge.submit import Target, check_rate, json_document, submit
from producers.openapi import RETRY_AFTER

router = APIRouter(tags=["ingest"])

ROUTE = "stream_items"  # the processors' rulebook (processors/items.py)


def error_body(error: ApiError) -> dict:
    """The seed's error shape."""
    return {"success": False, "error": {"code": error.code, "message": error.message, "details": error.details}}


def invalid(field: str, message: str, **details: object) -> ApiError:
    return ApiError(400, "INVALID_PAYLOAD", message, field=field, **details)


def check_structure(body: bytes) -> int:
    """The cheap structural check that answers malformed bodies at once (400 INVALID_PAYLOAD):
    one JSON object, or a non-empty array of JSON objects. Returns how many items."""
    document = json_document(body)
    if isinstance(document, dict):
        return 1
    if not isinstance(document, list):
        raise invalid("body", f"body: one item (a JSON object) or an array of items, not {brief(document)}")
    if not document:
        raise invalid("body", "body: the array has no items")
    for index, item in enumerate(document):
        if not isinstance(item, dict):
            raise invalid(f"items[{index}]", f"item {index} is not a JSON object: {brief(item)}", index=index)
    return len(document)


def item_key_field(request: Request) -> str | None:
    """The X-Item-Key header: the name of the field that identifies an item, or None."""
    field = request.headers.get("x-item-key")
    if field is not None and not 0 < len(field) <= NAME_MAX:
        raise invalid("X-Item-Key", f"X-Item-Key must name a field of 1–{NAME_MAX} characters")
    return field


def target_stream(request: Request, who: Principal, query: str | None) -> str:
    """The stream the request writes: the one its key names, or the one it names itself."""
    header = request.headers.get("x-stream")
    if header is not None and query is not None and header != query:
        raise invalid("X-Stream", "X-Stream and ?stream= name different streams")
    named = header if header is not None else query
    if named is None:
        reach = keys.reach(who.key)
        scoped = sorted(reach[2]) if reach is not None else []
        if len(scoped) != 1:
            raise invalid("X-Stream", "name the stream with X-Stream (or ?stream=): this key is not scoped "
                          "to exactly one stream")
        named = scoped[0]
    if not who.may_use_stream(named) or request.app.state.catalog.stream_named(who.org_id, named) is None:
        raise ApiError(404, "STREAM_NOT_FOUND", f"stream {brief(named)} does not match the ingest key")
    return named


# ----- the OpenAPI document: the seed's shapes, not Sluice's own

_ERROR = {"type": "object", "required": ["success", "error"], "properties": {
    "success": {"const": False},
    "error": {"type": "object", "required": ["code", "message", "details"], "properties": {
        "code": {"type": "string"}, "message": {"type": "string"},
        "details": {"type": "object", "additionalProperties": True}}}}}
_ACCEPTED = {"type": "object", "required": ["success", "data"], "properties": {
    "success": {"const": True},
    "data": {"type": "object", "required": ["stream", "items_received", "request_id"], "properties": {
        "stream": {"type": "string"}, "items_received": {"type": "integer", "minimum": 1},
        "request_id": {"type": "string"}}}}}
_STATUSES = {
    400: "INVALID_PAYLOAD: malformed JSON, an empty body, an item that is not an object, a bad header",
    401: "UNAUTHORIZED: missing or invalid ingest key",
    403: "FORBIDDEN: the key lacks the write scope",
    404: "STREAM_NOT_FOUND: the stream name does not match the ingest key",
    408: "REQUEST_TIMEOUT: the headers or body did not arrive in time",
    413: "PAYLOAD_TOO_LARGE: the body, as sent or inflated, exceeds 1 MiB (`details.limit`)",
    415: "UNSUPPORTED_CONTENT_ENCODING: a Content-Encoding other than gzip, zstd or identity",
    429: "RATE_LIMITED: too many requests; see Retry-After",
    503: "UNAVAILABLE: the broker is unreachable, or the pipeline is behind (async requests shed); see Retry-After",
}


def _responses() -> dict:
    declared: dict = {202: {"description": "accepted: durable on Kafka, processed asynchronously",
                            "content": {"application/json": {"schema": _ACCEPTED}}}}
    for status, description in _STATUSES.items():
        declared[status] = {"description": description, "content": {"application/json": {"schema": _ERROR}}}
        if status in (429, 503):
            declared[status]["headers"] = RETRY_AFTER
    return declared


_ITEM = {"type": "object", "additionalProperties": True}
_OPENAPI = {
    "security": [{"Bearer": []}, {"ApiKey": []}],
    "parameters": [
        {"name": "X-Item-Key", "in": "header", "required": False, "description": "the field that identifies an item",
         "schema": {"type": "string", "minLength": 1, "maxLength": NAME_MAX}},
        {"name": "X-Stream", "in": "header", "required": False,
         "description": "the stream, for a key not scoped to exactly one", "schema": {"type": "string"}},
        {"name": "Idempotency-Key", "in": "header", "required": False,
         "description": "a repeat within 24 h is accepted (202) and not reprocessed",
         "schema": {"type": "string", "minLength": 1, "maxLength": 255}}],
    "requestBody": {"required": True, "content": {"application/json": {"schema": {
        "oneOf": [_ITEM, {"type": "array", "minItems": 1, "items": _ITEM}]}}}},
}


@router.post("/api/ingest", status_code=202, openapi_extra=_OPENAPI, responses=_responses())
async def ingest(request: Request, who: Principal = Depends(principal),
                 stream: str | None = Query(None, min_length=1, max_length=NAME_MAX,
                                            description="the stream, for a key not scoped to exactly one")
                 ) -> JSONResponse:
    """Push one item or an array of items to the key's stream (seed 002)."""
    who.require("write")
    name = target_stream(request, who, stream)
    check_rate(request, who)
    body = await request.body()  # producers.edge.limits stops it at the ingest limit, while it streams
    count = check_structure(body)
    field = item_key_field(request)
    document = b'{"itemKey":' + orjson.dumps(field) + b',"items":' + body + b"}"
    done = await submit(request, who, Target(ROUTE, stream=name), document, None)
    return JSONResponse({"success": True, "data": {"stream": name, "items_received": count,
                                                   "request_id": done.request_id}},
                        status_code=202, headers={"X-Request-Id": done.request_id})


DIALECT = Dialect("streams", router, re.compile(r"^/api/ingest(?:/|$)"), error_body)
