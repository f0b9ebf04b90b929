"""Ingest: `POST /v2/thing/{thingId}/data` lands the request on the raw topic.

The edge checks only what it must (key, scope, size, that the thing is the
caller's); the processors hold the rulebook. 202 is sent once Kafka has the
request durably.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

import schemas
from catalog.errors import SluiceError
from catalog.ids import request_id as new_request_id
from producers.auth import Principal, principal
from producers.raw_producer import ProducerUnavailable

router = APIRouter(prefix="/v2", tags=["ingest"])


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refusing with 413 as soon as it exceeds `limit` (never buffered whole)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise SluiceError(413, "PAYLOAD_TOO_LARGE", f"request body exceeds {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise SluiceError(413, "PAYLOAD_TOO_LARGE", f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/thing/{thing_id}/data",
    status_code=202,
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["frames"], "properties": {"frames": {"type": "array", "items": {
            "type": "object", "required": ["timestamp", "metrics"], "properties": {
                "timestamp": {"type": "integer", "description": "event time, epoch ms UTC"},
                "metrics": {"type": "object", "additionalProperties": {}}}}}}}}}}},
)
async def post_thing_data(thing_id: str, request: Request, who: Principal = Depends(principal)) -> JSONResponse:
    who.require("write")
    state = request.app.state
    if state.catalog.view.get("thing", thing_id, who.org_id) is None:
        raise SluiceError(404, "THING_NOT_FOUND", f"thing {thing_id!r} not found")
    body = await _read_body(request, state.settings.max_body_bytes)
    request_id = new_request_id()
    envelope = {
        "request_id": request_id,
        "org_id": who.org_id,
        "key_id": who.key["id"],
        "route": "thing_data",
        "received_at": int(time.time() * 1000),
        "thing_id": thing_id,
        "stream": None,
        "template_id": None,
        "idempotency_key": request.headers.get("idempotency-key"),
        "content_type": request.headers.get("content-type", "application/json"),
        "body": body,
    }
    try:
        await state.raw_producer.send(state.topics.raw, thing_id.encode(),
                                      schemas.encode(schemas.RAW_ENVELOPE, envelope))
    except ProducerUnavailable as exc:
        raise SluiceError(503, "UNAVAILABLE", str(exc), retry_after=exc.retry_after) from None
    return JSONResponse({"requestId": request_id, "thingId": thing_id, "status": "accepted"}, status_code=202)
