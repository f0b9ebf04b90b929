"""The harbor dialect (seed 003): tall points pushed to a harbor, one or a batch.

    POST /api/v1/ingest/ingest/{harbor_id}         one point {time, ship_id, cargo_id, value}
    POST /api/v1/ingest/ingest/{harbor_id}/batch   an array of points

The key comes in `X-API-Key` and must write to the harbor (unfiltered, or a
place filter naming it: a batch may name any ship of the harbor, new ones
included). The edge checks the key, the rate, that the harbor is the caller's,
and the body's outline; the processors judge the points (processors/points.py).
202 once Kafka has the request; with `Prefer: wait=N` (or `?wait=true`) the
verdict, 200 or the rule's 4xx. Errors answer in this dialect's own small shape,
as FastAPI-style clients read it: `{"detail", "code", "field", "requestId"?}`.

Requests of a harbor spread over the raw partitions (a harbor is a dataset, not
one device); the repeats of one Idempotency-Key stay together, as its scope needs.
"""

from __future__ import annotations

import re
import secrets

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from catalog.harbors import KIND
from producers.dialects.dialect import Dialect, verdict_headers
from producers.edge.auth import Principal, principal
from producers.edge.errors import ApiError
from producers.edge.submit import Target, check_rate, json_document, requested_wait, submit

router = APIRouter(prefix="/api/v1/ingest", tags=["harbor"])
ROUTE = "harbor_points"

POINT = {"type": "object", "required": ["time", "ship_id", "cargo_id", "value"], "properties": {
    "time": {"type": "string", "description": "ISO 8601 date-time; without an offset, UTC"},
    "ship_id": {"type": "string", "minLength": 1, "maxLength": 200, "description": "the ship (a thing)"},
    "cargo_id": {"type": "string", "minLength": 1, "maxLength": 200, "description": "the cargo (a Double metric)"},
    "value": {"type": "number"}}}
ERROR = {"type": "object", "required": ["detail", "code", "field"], "properties": {
    "detail": {"type": "string"}, "code": {"type": "string", "description": "e.g. UNKNOWN_SHIP, INVALID_TIMESTAMP"},
    "field": {"type": ["string", "null"], "description": "the offending field: `value`, `[3].time`, ..."},
    "requestId": {"type": "string"}, "limit": {"type": "integer"}}}
ACCEPTED = {"type": "object", "required": ["requestId", "harborId", "status", "points"], "properties": {
    "requestId": {"type": "string"}, "harborId": {"type": "string"},
    "status": {"type": "string", "enum": ["accepted", "ingested"]}, "points": {"type": "integer"},
    "cargos": {"type": "array", "items": {"type": "string"}}}}
STATUSES = {
    400: "INVALID_PAYLOAD, INVALID_TIMESTAMP, INVALID_VALUE, UNKNOWN_SHIP, UNKNOWN_CARGO: `field` names where",
    401: "UNAUTHORIZED: no API key, or an invalid or revoked one",
    403: "FORBIDDEN: the key cannot write, or its filters do not cover the harbor",
    404: "HARBOR_NOT_FOUND (another org's harbor too)",
    408: "REQUEST_TIMEOUT: the headers or body did not arrive in time",
    413: "PAYLOAD_TOO_LARGE: the body, as sent or inflated, exceeds the ingest limit (`limit`)",
    415: "UNSUPPORTED_CONTENT_ENCODING: a Content-Encoding other than gzip, zstd or identity",
    422: "IDEMPOTENCY_KEY_REUSED: the key was used with another body",
    429: "RATE_LIMITED or TOO_MANY_CONNECTIONS; see Retry-After",
    503: "UNAVAILABLE: the broker is unreachable, or the pipeline is behind (async requests shed); see Retry-After",
}
OPENAPI = {
    "security": [{"ApiKey": []}, {"Bearer": []}],
    "responses": {
        "200": {"description": "with a wait preference: ingested",
                "content": {"application/json": {"schema": ACCEPTED}}},
        "202": {"description": "accepted: durable on Kafka, judged asynchronously",
                "content": {"application/json": {"schema": ACCEPTED}}},
        **{str(status): {"description": text, "content": {"application/json": {"schema": ERROR}}}
           for status, text in STATUSES.items()}},
}


def harbor_error_body(error: ApiError) -> dict:
    """This dialect's error: `{"detail", "code", "field"}`, and `requestId` / `limit` when known."""
    body = {"detail": error.message, "code": error.code, "field": error.details.get("field")}
    body.update((k, error.details[k]) for k in ("requestId", "limit") if k in error.details)
    return body


def invalid(reason: str) -> ApiError:
    return ApiError(400, "INVALID_PAYLOAD", reason, field="body")


def count_points(body: bytes, batch: bool) -> int:
    """The body's outline, answered at once: one JSON object, or a non-empty array for a batch.
    Every rule about a point is the processor's, for sync and async requests alike."""
    document = json_document(body)
    if not batch:
        if not isinstance(document, dict):
            raise invalid("must be one point, a JSON object (send arrays to …/batch)")
        return 1
    if not isinstance(document, list) or not document:
        raise invalid("must be a non-empty JSON array of points")
    return len(document)


def verdict_response(verdict: dict, harbor_id: str) -> JSONResponse:
    headers = verdict_headers(verdict)
    if verdict["http_status"] == 200:
        return JSONResponse({"requestId": verdict["request_id"], "harborId": harbor_id, "status": "ingested",
                             "points": verdict["frames_ingested"], "cargos": verdict["metrics"]}, headers=headers)
    first = verdict["errors"][0] if verdict["errors"] else {"code": "REJECTED", "message": "rejected"}
    return JSONResponse({"detail": first["message"], "code": first["code"], "field": first.get("field"),
                         "requestId": verdict["request_id"]}, status_code=verdict["http_status"], headers=headers)


async def _ingest(harbor_id: str, request: Request, who: Principal, wait: bool, batch: bool) -> JSONResponse:
    who.require("write")
    harbor = request.app.state.catalog.view.get("place", harbor_id, who.org_id)
    if harbor is None or harbor.get("kind") != KIND:
        raise ApiError(404, "HARBOR_NOT_FOUND", f"harbor {harbor_id!r} not found", field="harbor_id")
    who.require_place(harbor_id)
    check_rate(request, who)
    body = await request.body()  # producers.edge.limits stops it at the ingest limit, while it streams
    points = count_points(body, batch)
    wait_s = requested_wait(request, wait, request.app.state.settings.max_wait_s)
    # Spread over partitions; an Idempotency-Key's repeats share one (their scope is this harbor).
    spread = request.headers.get("idempotency-key") or secrets.token_hex(8)
    target = Target(ROUTE, stream=harbor_id, partition=f"{harbor_id}/{spread}")
    done = await submit(request, who, target, body, wait_s)
    if done.verdict is not None:
        reply = verdict_response(done.verdict, harbor_id)
        reply.headers["Preference-Applied"] = f"wait={done.waited_s:g}"
        return reply
    return JSONResponse({"requestId": done.request_id, "harborId": harbor_id, "status": "accepted",
                         "points": points}, status_code=202, headers={"X-Request-Id": done.request_id})


WAIT = Query(False, description="wait for the verdict (see also Prefer: wait=N)")


@router.post("/ingest/{harbor_id}", status_code=202, openapi_extra={**OPENAPI, "requestBody": {
    "required": True, "content": {"application/json": {"schema": POINT}}}})
async def push_point(harbor_id: str, request: Request, who: Principal = Depends(principal),
                     wait: bool = WAIT) -> JSONResponse:
    """Seed 003's single data push: one point."""
    return await _ingest(harbor_id, request, who, wait, batch=False)


@router.post("/ingest/{harbor_id}/batch", status_code=202, openapi_extra={**OPENAPI, "requestBody": {
    "required": True, "content": {"application/json": {"schema": {"type": "array", "minItems": 1, "items": POINT}}}}})
async def push_batch(harbor_id: str, request: Request, who: Principal = Depends(principal),
                     wait: bool = WAIT) -> JSONResponse:
    """Seed 003's batch data push: an array of points, judged whole."""
    return await _ingest(harbor_id, request, who, wait, batch=True)


DIALECT = Dialect("harbor", router, re.compile(r"^/api/v1/ingest(?:/|$)"), harbor_error_body)
