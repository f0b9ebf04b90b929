"""Sluice's own dialect (seed 001): `POST /v2/thing/{thingId}/data` with a `frames` body.

The edge checks only what it must (key, scope, rate, that the thing is the
caller's, and the body's outline; its size is producers.edge.limits'); the
processors hold the rulebook. By default it answers 202 once
Kafka has the request durably. With `Prefer: wait=N` or `?wait=true` it holds
the request until the processor's verdict arrives (200, or the 4xx of the
rules), or answers 202 when the wait runs out.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from producers.dialects.dialect import Dialect, verdict_headers
from producers.edge.auth import Principal, principal, thing_for
from producers.edge.errors import ApiError
from producers.edge.submit import Target, check_rate, json_document, outline_error, requested_wait, submit
from producers.openapi import errors

router = APIRouter(prefix="/v2", tags=["ingest"])

# The route key this dialect's envelopes carry (processors/rulebooks.py picks the frames rulebook by it). It is
# on the raw topic and in the stored ingest log, so it keeps its first name while the module is "frames".
ROUTE = "thing_data"

# The rulebook's contract (processors/normalize.py), for the document; the edge checks only its outline.
FRAMES_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["frames"], "properties": {"frames": {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["timestamp"], "description": "a frame needs metrics or a location",
        "anyOf": [{"required": ["metrics"], "properties": {"metrics": {"type": "object"}}},
                  {"required": ["location"], "properties": {"location": {"type": "object"}}}],
        "properties": {
            "timestamp": {"type": "integer", "minimum": 0, "description": "event time, epoch ms UTC"},
            # null is as good as absent for both.
            "metrics": {"type": ["object", "null"], "minProperties": 1,
                        "additionalProperties": {"type": ["number", "boolean", "string"]},
                        "description": "metric name → scalar"},
            "location": {"type": ["object", "null"], "required": ["latitude", "longitude"], "properties": {
                "latitude": {"type": "number", "minimum": -90, "maximum": 90},
                "longitude": {"type": "number", "minimum": -180, "maximum": 180},
                "accuracyRadius": {"type": ["number", "null"], "minimum": 0, "maximum": 1e7,
                                   "description": "metres"}}}}}}}}}}}}


def check_structure(body: bytes) -> None:
    """The cheap structural check that answers malformed bodies at once (400 INVALID_PAYLOAD):
    a JSON object whose `frames` is a non-empty array. Every rule about a frame's contents
    is the processor's (processors/normalize.py), for sync and async requests alike."""
    document = json_document(body)
    if not isinstance(document, dict):
        raise outline_error("body", "must be a JSON object")
    frames = document.get("frames")
    if not isinstance(frames, list):
        raise outline_error("frames", "required, an array of frames")
    if not frames:
        raise outline_error("frames", "at least one frame is required")


def verdict_response(verdict: dict) -> JSONResponse:
    """The seed's sync reply: 200 with the ingest summary, or the rule's 4xx in the error shape."""
    headers = verdict_headers(verdict)
    if verdict["http_status"] == 200:
        return JSONResponse({"thingId": verdict["thing_id"], "framesIngested": verdict["frames_ingested"],
                             "metrics": verdict["metrics"], "requestId": verdict["request_id"]},
                            status_code=200, headers=headers)
    first = verdict["errors"][0] if verdict["errors"] else {"code": "REJECTED", "message": "rejected"}
    error = ApiError(verdict["http_status"], first["code"], first["message"], field=first.get("field"),
                     requestId=verdict["request_id"], errors=verdict["errors"])
    return JSONResponse(error.body(), status_code=verdict["http_status"], headers=headers)


@router.post("/thing/{thing_id}/data", status_code=202, openapi_extra=FRAMES_BODY, responses={
    200: {"description": "with a wait preference: the verdict, frames ingested"},
    202: {"description": "accepted: durable on Kafka, processed asynchronously"},
    **errors(400, 404, 424, 503)})
async def post_thing_data(thing_id: str, request: Request, who: Principal = Depends(principal),
                          wait: bool = Query(False, description="wait for the verdict (see also Prefer: wait=N)"),
                          ) -> JSONResponse:
    thing_for(request, who, thing_id, "write")
    check_rate(request, who)
    body = await request.body()  # producers.edge.limits stops it at the ingest limit, while it streams
    check_structure(body)
    wait_s = requested_wait(request, wait, request.app.state.settings.max_wait_s)
    done = await submit(request, who, Target(ROUTE, thing_id=thing_id), body, wait_s)
    if done.verdict is not None:
        reply = verdict_response(done.verdict)
        reply.headers["Preference-Applied"] = f"wait={done.waited_s:g}"
        return reply
    return JSONResponse({"requestId": done.request_id, "thingId": thing_id, "status": "accepted"}, status_code=202,
                        headers={"X-Request-Id": done.request_id})


DIALECT = Dialect("frames", router, re.compile(r"^/v2/thing/[^/]+/data(?:/|$)"))
