"""Ingest: `POST /v2/thing/{thingId}/data` lands the request on the raw topic.

The edge checks only what it must (key, scope, rate, that the thing is the
caller's, and the body's outline; its size is producers.limits'); the
processors hold the rulebook. By default it answers 202 once
Kafka has the request durably. With `Prefer: wait=N` or `?wait=true` it holds
the request until the processor's verdict arrives (200, or the 4xx of the
rules), or answers 202 when the wait runs out.
"""

from __future__ import annotations

import asyncio
import re
import time

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

import schemas
from catalog.errors import SluiceError
from catalog.ids import request_id as new_request_id
from producers.auth import Principal, principal, thing_for
from producers.openapi import errors
from producers.raw_producer import ProducerUnavailable

router = APIRouter(prefix="/v2", tags=["ingest"])

DEFAULT_WAIT_S = 10.0
_PREFER_WAIT = re.compile(r"(?:^|[;,\s])wait\s*=\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_MAX_IDEMPOTENCY_KEY = 255

# The rulebook's contract (processors/normalize.py), for the document; the edge checks only its outline.
FRAMES_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["frames"], "properties": {"frames": {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["timestamp"], "description": "a frame needs metrics or a location",
        "properties": {
            "timestamp": {"type": "integer", "minimum": 0, "description": "event time, epoch ms UTC"},
            # null is as good as absent for both.
            "metrics": {"type": ["object", "null"], "additionalProperties": {}, "description": "metric name → scalar"},
            "location": {"type": ["object", "null"], "required": ["latitude", "longitude"], "properties": {
                "latitude": {"type": "number", "minimum": -90, "maximum": 90},
                "longitude": {"type": "number", "minimum": -180, "maximum": 180},
                "accuracyRadius": {"type": ["number", "null"], "minimum": 0, "maximum": 1e7,
                                   "description": "metres"}}}}}}}}}}}}


def check_structure(body: bytes) -> None:
    """The cheap structural check that answers malformed bodies at once (400 INVALID_PAYLOAD):
    a JSON object whose `frames` is a non-empty array. Every rule about a frame's contents
    is the processor's (processors/normalize.py), for sync and async requests alike."""
    def invalid(field: str, reason: str) -> SluiceError:
        return SluiceError(400, "INVALID_PAYLOAD", f"{field}: {reason}", field=field, reason=reason)

    if not body or body.isspace():
        raise invalid("body", "the request body is empty")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid("body", f"not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise invalid("body", "must be a JSON object")
    frames = document.get("frames")
    if not isinstance(frames, list):
        raise invalid("frames", "required, an array of frames")
    if not frames:
        raise invalid("frames", "at least one frame is required")


def requested_wait(request: Request, wait: bool, max_wait: float) -> float | None:
    """Seconds to wait for the verdict (RFC 7240 `Prefer: wait=N`, or `?wait=true`), or None."""
    match = _PREFER_WAIT.search(request.headers.get("prefer", ""))
    if match:
        return min(float(match.group(1)), max_wait)
    return min(DEFAULT_WAIT_S, max_wait) if wait else None


def verdict_response(verdict: dict) -> JSONResponse:
    """The seed's sync reply: 200 with the ingest summary, or the rule's 4xx in the error shape."""
    headers = {"X-Request-Id": verdict["request_id"]}
    if verdict["duplicate_of"]:
        headers["Idempotent-Replayed"] = "true"
    if verdict["http_status"] == 200:
        return JSONResponse({"thingId": verdict["thing_id"], "framesIngested": verdict["frames_ingested"],
                             "metrics": verdict["metrics"], "requestId": verdict["request_id"]},
                            status_code=200, headers=headers)
    first = verdict["errors"][0] if verdict["errors"] else {"code": "REJECTED", "message": "rejected"}
    error = SluiceError(verdict["http_status"], first["code"], first["message"], field=first.get("field"),
                        requestId=verdict["request_id"], errors=verdict["errors"])
    return JSONResponse(error.body(), status_code=verdict["http_status"], headers=headers)


@router.post("/thing/{thing_id}/data", status_code=202, openapi_extra=FRAMES_BODY, responses={
    200: {"description": "with a wait preference: the verdict, frames ingested"},
    202: {"description": "accepted: durable on Kafka, processed asynchronously"},
    **errors(400, 404, 424, 503)})
async def post_thing_data(thing_id: str, request: Request, who: Principal = Depends(principal),
                          wait: bool = Query(False, description="wait for the verdict (see also Prefer: wait=N)"),
                          ) -> JSONResponse:
    state = request.app.state
    thing_for(request, who, thing_id, "write")
    retry_after = state.rate_limiter.acquire(who.key["id"])
    if retry_after:
        raise SluiceError(429, "RATE_LIMITED", "too many requests for this API key", retry_after=retry_after)
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None and not 0 < len(idempotency_key) <= _MAX_IDEMPOTENCY_KEY:
        raise SluiceError(400, "INVALID_PAYLOAD", f"Idempotency-Key must be 1–{_MAX_IDEMPOTENCY_KEY} characters",
                          field="Idempotency-Key")
    body = await request.body()  # producers.limits stops it at the ingest limit, while it streams
    check_structure(body)
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
        "idempotency_key": idempotency_key,
        # Cut: headers are not size-limited, and a max-size body must still fit the raw topic's limit.
        "content_type": request.headers.get("content-type", "application/json")[:255],
        # What this edge knew of the catalog: the processor catches up to it before judging.
        "catalog_offset": state.catalog.view.applied_offset,
        "body": body,
    }
    # Keyed by the thing: an Idempotency-Key's scope includes its target (processors.idempotency),
    # so all its repeats share a partition and one processor sees them in order.
    key = thing_id
    wait_s = requested_wait(request, wait, state.settings.max_wait_s)
    verdict = state.results.expect(request_id) if wait_s else None
    try:
        await state.raw_producer.send(state.topics.raw, key.encode(), schemas.encode(schemas.RAW_ENVELOPE, envelope))
        if verdict is not None:
            try:
                reply = verdict_response(await asyncio.wait_for(verdict, wait_s))
                reply.headers["Preference-Applied"] = f"wait={wait_s:g}"
                return reply
            except asyncio.TimeoutError:
                pass  # still processing: answer as an async request would
    except ProducerUnavailable as exc:
        raise SluiceError(exc.status, "UNAVAILABLE" if exc.status == 503 else "RATE_LIMITED", str(exc),
                          retry_after=exc.retry_after) from None
    finally:
        if verdict is not None:
            state.results.forget(request_id)
    return JSONResponse({"requestId": request_id, "thingId": thing_id, "status": "accepted"}, status_code=202,
                        headers={"X-Request-Id": request_id})
