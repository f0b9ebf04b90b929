"""The asset dialect (seed 000, the Data Ingest API): one asset's machine insights,
locations and advanced sensors, real-time or historical.

    POST /v1/assets/{assetId}/data   {"machineInsights": [...], "locations": [...], "advancedSensors": [...]}

An asset is a thing. The key (`X-Api-Key` or `Authorization: Bearer`) must have
the `write` scope and see the asset: an asset outside its filters is answered
exactly like one that does not exist (404 asset_not_found), as the seed's
"visibility access" asks. The edge checks the key, the asset, the rate and the
body's outline; the processors judge the entries (processors/assets.py). 202
once Kafka has the request; with `Prefer: wait=N` (or `?wait=true`) the
verdict, 200 or the rule's 4xx. Errors answer in this dialect's shape:
`{"status", "code" (snake case), "message", "violations"?: [{"field", "message"}], "requestId"?}`.
"""

from __future__ import annotations

import re

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from catalog.errors import SluiceError
from producers.auth import Principal, principal
from producers.dialects import Dialect
from producers.openapi import ERROR_REF
from producers.submit import Target, check_rate, requested_wait, submit

router = APIRouter(prefix="/v1/assets", tags=["assets"])
ROUTE = "asset_data"
SECTIONS = ("machineInsights", "locations", "advancedSensors")

TIME = {"type": ["string", "integer"], "description": "ISO 8601 date-time (UTC without an offset) or epoch ms"}
BODY = {"type": "object", "additionalProperties": False, "minProperties": 1, "properties": {
    "machineInsights": {"type": "array", "items": {"type": "object", "required": ["time", "name", "value"],
                        "properties": {"time": TIME, "name": {"type": "string", "description":
                                       "an ISO 15143-3 insight, e.g. CumulativeOperatingHours"}, "value": {}}}},
    "locations": {"type": "array", "items": {"type": "object", "required": ["time", "latitude", "longitude"],
                  "properties": {"time": TIME, "latitude": {"type": "number", "minimum": -90, "maximum": 90},
                                 "longitude": {"type": "number", "minimum": -180, "maximum": 180},
                                 "accuracyRadius": {"type": ["number", "null"], "minimum": 0, "maximum": 1e7,
                                                    "description": "metres"}}}},
    "advancedSensors": {"type": "array", "items": {"type": "object", "required": ["time", "sensorId", "value"],
                        "properties": {"time": TIME, "sensorId": {"type": "string", "description":
                                       "a metric id (mdef_…) of the asset's type"}, "value": {}}}}}}
COUNTS = {"machineInsights": {"type": "integer"}, "locations": {"type": "integer"},
          "advancedSensors": {"type": "integer"}}
REPLY = {"type": "object", "required": ["requestId", "assetId", "status", *SECTIONS], "properties": {
    "requestId": {"type": "string"}, "assetId": {"type": "string"},
    "status": {"type": "string", "enum": ["accepted", "ingested"]}, **COUNTS}}
ERROR = {"type": "object", "required": ["status", "code", "message"], "properties": {
    "status": {"type": "integer"}, "code": {"type": "string", "description": "snake case, e.g. unknown_sensor"},
    "message": {"type": "string"},
    "violations": {"type": "array", "items": {"type": "object", "properties": {
        "field": {"type": "string"}, "message": {"type": "string"}}}},
    "requestId": {"type": "string"}, "limit": {"type": "integer"}}}
STATUSES = {
    400: "invalid_payload, invalid_timestamp, invalid_value, invalid_location, unknown_machine_insight, "
         "unknown_sensor: `violations` names the field",
    401: "unauthorized: no API key, or an invalid or revoked one",
    403: "forbidden: the key lacks the write scope",
    404: "asset_not_found: no such asset, another org's, or one the key's filters do not cover",
    408: "REQUEST_TIMEOUT: the headers or body did not arrive in time (the connection layer answers, "
         "in Sluice's own error shape, before any route)",
    413: "payload_too_large: the body exceeds the ingest limit (`limit`)",
    422: "idempotency_key_reused: the key was used with another body",
    424: "preset_not_installed: machine insights need the org's iso15143-3 preset",
    429: "rate_limited or too_many_connections; see Retry-After",
    503: "unavailable: the broker is unreachable; see Retry-After",
}
OPENAPI = {
    "security": [{"ApiKey": []}, {"Bearer": []}],
    "requestBody": {"required": True, "content": {"application/json": {"schema": BODY}}},
    "responses": {
        "200": {"description": "with a wait preference: ingested", "content": {"application/json": {"schema": REPLY}}},
        "202": {"description": "accepted: durable on Kafka, judged asynchronously",
                "content": {"application/json": {"schema": REPLY}}},
        **{str(status): {"description": text, "content": {"application/json": {
            "schema": ERROR_REF if status == 408 else ERROR}}} for status, text in STATUSES.items()}},
}


def asset_error_body(error: SluiceError) -> dict:
    """`{"status", "code", "message"}`, `violations` when a field is named, `requestId` / `limit` when known."""
    body = {"status": error.status, "code": error.code.lower(), "message": error.message}
    if error.details.get("field"):
        body["violations"] = [{"field": error.details["field"], "message": error.message}]
    body.update((k, error.details[k]) for k in ("requestId", "limit") if k in error.details)
    return body


def count_entries(body: bytes) -> dict[str, int]:
    """The body's outline, answered at once: a JSON object whose sections are arrays, with at
    least one entry. Every rule about an entry is the processor's, for sync and async alike."""
    def invalid(reason: str, field: str = "body") -> SluiceError:
        return SluiceError(400, "INVALID_PAYLOAD", reason, field=field)

    if not body or body.isspace():
        raise invalid("the request body is empty")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise invalid("must be a JSON object with machineInsights, locations and/or advancedSensors")
    counts = {}
    for section in SECTIONS:
        entries = document.get(section)
        if entries is not None and not isinstance(entries, list):
            raise invalid(f"{section} must be an array", section)
        counts[section] = len(entries or ())
    if not any(counts.values()):
        raise invalid("at least one entry is required in machineInsights, locations or advancedSensors")
    return counts


def visible_asset(request: Request, who: Principal, asset_id: str) -> dict:
    """The asset, if the key may write and sees it; 404 alike for missing and invisible."""
    who.require("write")
    asset = request.app.state.catalog.view.get("thing", asset_id, who.org_id)
    if asset is None or not who.may_use_thing(asset):
        raise SluiceError(404, "ASSET_NOT_FOUND", f"asset {asset_id[:64]!r} not found", field="assetId")
    return asset


def verdict_response(verdict: dict, asset_id: str, counts: dict[str, int]) -> JSONResponse:
    headers = {"X-Request-Id": verdict["request_id"]}
    if verdict["duplicate_of"]:
        headers["Idempotent-Replayed"] = "true"
    if verdict["http_status"] == 200:
        return JSONResponse({"requestId": verdict["request_id"], "assetId": asset_id, "status": "ingested",
                             **counts}, headers=headers)
    first = verdict["errors"][0] if verdict["errors"] else {"code": "REJECTED", "message": "rejected"}
    error = SluiceError(verdict["http_status"], first["code"], first["message"], field=first.get("field"),
                        requestId=verdict["request_id"])
    return JSONResponse(asset_error_body(error), status_code=verdict["http_status"], headers=headers)


@router.post("/{asset_id}/data", status_code=202, openapi_extra=OPENAPI)
async def post_asset_data(asset_id: str, request: Request, who: Principal = Depends(principal),
                          wait: bool = Query(False, description="wait for the verdict (see also Prefer: wait=N)"),
                          ) -> JSONResponse:
    """Seed 000's data ingest: one asset's machine insights, locations and advanced sensors."""
    visible_asset(request, who, asset_id)
    check_rate(request, who)
    body = await request.body()  # producers.limits stops it at the ingest limit, while it streams
    counts = count_entries(body)
    wait_s = requested_wait(request, wait, request.app.state.settings.max_wait_s)
    done = await submit(request, who, Target(ROUTE, thing_id=asset_id), body, wait_s)
    if done.verdict is not None:
        reply = verdict_response(done.verdict, asset_id, counts)
        reply.headers["Preference-Applied"] = f"wait={done.waited_s:g}"
        return reply
    return JSONResponse({"requestId": done.request_id, "assetId": asset_id, "status": "accepted", **counts},
                        status_code=202, headers={"X-Request-Id": done.request_id})


DIALECT = Dialect("assets", router, re.compile(r"^/v1/assets(?:/|$)"), asset_error_body)
