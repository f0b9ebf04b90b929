"""The asset dialect (seed 000, the Data Ingest API): one asset's machine insights,
locations and advanced sensors, real-time or historical.

    POST /v1/assets/{assetId}/data   {"machineInsights": [...], "locations": [...], "advancedSensors": [...]}
    POST /v1/assets/data             {"assets": [{"assetId", "machineInsights"?, "locations"?, "advancedSensors"?}]}

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
import secrets

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from producers.dialects.dialect import Dialect, verdict_headers
from producers.edge.auth import Principal, principal
from producers.edge.errors import ApiError
from producers.edge.submit import Target, check_rate, json_document, requested_wait, submit
from producers.openapi import ERROR_REF

router = APIRouter(prefix="/v1/assets", tags=["assets"])
ROUTE, BATCH_ROUTE = "asset_data", "asset_batch"
SECTIONS = ("machineInsights", "locations", "advancedSensors")

TIME = {"type": ["string", "integer"], "description": "ISO 8601 date-time (UTC without an offset) or epoch ms"}
# At least one entry, in any section.
SOME_ENTRY = [{"required": [section], "properties": {section: {"minItems": 1}}} for section in SECTIONS]
BODY = {"type": "object", "additionalProperties": False, "anyOf": SOME_ENTRY, "properties": {
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
BATCH_BODY = {"type": "object", "required": ["assets"], "additionalProperties": False, "properties": {
    "assets": {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["assetId"], "additionalProperties": False, "anyOf": SOME_ENTRY,
        "properties": {"assetId": {"type": "string", "minLength": 1}, **BODY["properties"]}}}}}
COUNTS = {"machineInsights": {"type": "integer"}, "locations": {"type": "integer"},
          "advancedSensors": {"type": "integer"}}
REPLY = {"type": "object", "required": ["requestId", "assetId", "status", *SECTIONS], "properties": {
    "requestId": {"type": "string"}, "assetId": {"type": "string"},
    "status": {"type": "string", "enum": ["accepted", "ingested"]}, **COUNTS}}
BATCH_REPLY = {"type": "object", "required": ["requestId", "status", "assets", *SECTIONS], "properties": {
    "requestId": {"type": "string"}, "status": {"type": "string", "enum": ["accepted", "ingested"]},
    "assets": {"type": "integer"}, **COUNTS}}
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
    413: "payload_too_large: the body, as sent or inflated, exceeds the ingest limit (`limit`)",
    415: "unsupported_content_encoding: a Content-Encoding other than gzip, zstd or identity",
    422: "idempotency_key_reused: the key was used with another body",
    424: "preset_not_installed: machine insights need the org's iso15143-3 preset",
    429: "rate_limited or too_many_connections; see Retry-After",
    503: "unavailable: the broker is unreachable, or the pipeline is behind (async requests shed); see Retry-After",
}


def _openapi(body: dict, reply: dict) -> dict:
    return {
        "security": [{"ApiKey": []}, {"Bearer": []}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": {
            "200": {"description": "with a wait preference: ingested",
                    "content": {"application/json": {"schema": reply}}},
            "202": {"description": "accepted: durable on Kafka, judged asynchronously",
                    "content": {"application/json": {"schema": reply}}},
            **{str(status): {"description": text, "content": {"application/json": {
                "schema": ERROR_REF if status == 408 else ERROR}}} for status, text in STATUSES.items()}},
    }


def asset_error_body(error: ApiError) -> dict:
    """`{"status", "code", "message"}`, `violations` when a field is named, `requestId` / `limit` when known."""
    body = {"status": error.status, "code": error.code.lower(), "message": error.message}
    if error.details.get("field"):
        body["violations"] = [{"field": error.details["field"], "message": error.message}]
    body.update((k, error.details[k]) for k in ("requestId", "limit") if k in error.details)
    return body


def _invalid(reason: str, field: str = "body") -> ApiError:
    return ApiError(400, "INVALID_PAYLOAD", reason, field=field)


def _document(body: bytes) -> dict:
    document = json_document(body)
    if not isinstance(document, dict):
        raise _invalid("must be a JSON object")
    return document


def _counts(document: dict, prefix: str = "") -> dict[str, int]:
    counts = {}
    for section in SECTIONS:
        entries = document.get(section)
        if entries is not None and not isinstance(entries, list):
            raise _invalid(f"{section} must be an array", prefix + section)
        counts[section] = len(entries or ())
    if not any(counts.values()):
        raise _invalid("at least one entry is required in machineInsights, locations or advancedSensors",
                       prefix.rstrip(".") or "body")
    return counts


def count_entries(body: bytes) -> dict[str, int]:
    """The body's outline, answered at once: a JSON object whose sections are arrays, with at
    least one entry. Every rule about an entry is the processor's, for sync and async alike."""
    return _counts(_document(body))


def outline_batch(body: bytes) -> tuple[list[str], dict[str, int]]:
    """A batch's outline: `assets` a non-empty array of objects, each with an `assetId` string
    and at least one entry. Returns (asset ids, entry counts summed over the assets)."""
    document = _document(body)
    assets = document.get("assets")
    if not isinstance(assets, list) or not assets:
        raise _invalid("assets: required, a non-empty array", "assets")
    ids, counts = [], dict.fromkeys(SECTIONS, 0)
    for index, item in enumerate(assets):
        where = f"assets[{index}]"
        if not isinstance(item, dict):
            raise _invalid("an asset's entry must be an object", where)
        if not isinstance(item.get("assetId"), str) or not item["assetId"]:
            raise _invalid("assetId: required, a non-empty string", f"{where}.assetId")
        ids.append(item["assetId"])
        for section, count in _counts(item, f"{where}.").items():
            counts[section] += count
    return ids, counts


def visible_asset(request: Request, who: Principal, asset_id: str, field: str = "assetId") -> dict:
    """The asset, if the key sees it; 404 alike for missing and invisible (check the scope first)."""
    asset = request.app.state.catalog.view.get("thing", asset_id, who.org_id)
    if asset is None or not who.may_use_thing(asset):
        raise ApiError(404, "ASSET_NOT_FOUND", f"asset {asset_id[:64]!r} not found", field=field)
    return asset


def verdict_response(verdict: dict, summary: dict) -> JSONResponse:
    """The verdict as this dialect answers it: 200 with `summary`, or the rule's error."""
    headers = verdict_headers(verdict)
    if verdict["http_status"] == 200:
        return JSONResponse({"requestId": verdict["request_id"], **summary, "status": "ingested"}, headers=headers)
    first = verdict["errors"][0] if verdict["errors"] else {"code": "REJECTED", "message": "rejected"}
    error = ApiError(verdict["http_status"], first["code"], first["message"], field=first.get("field"),
                     requestId=verdict["request_id"])
    return JSONResponse(asset_error_body(error), status_code=verdict["http_status"], headers=headers)


async def _send(request: Request, who: Principal, target: Target, body: bytes, wait: bool,
                summary: dict) -> JSONResponse:
    wait_s = requested_wait(request, wait, request.app.state.settings.max_wait_s)
    done = await submit(request, who, target, body, wait_s)
    if done.verdict is not None:
        reply = verdict_response(done.verdict, summary)
        reply.headers["Preference-Applied"] = f"wait={done.waited_s:g}"
        return reply
    return JSONResponse({"requestId": done.request_id, **summary, "status": "accepted"}, status_code=202,
                        headers={"X-Request-Id": done.request_id})


WAIT = Query(False, description="wait for the verdict (see also Prefer: wait=N)")


@router.post("/data", status_code=202, openapi_extra=_openapi(BATCH_BODY, BATCH_REPLY))
async def post_assets_data(request: Request, who: Principal = Depends(principal), wait: bool = WAIT) -> JSONResponse:
    """Seed 000's data ingest for several assets at once, judged whole."""
    who.require("write")
    check_rate(request, who)
    body = await request.body()  # producers.edge.limits stops it at the ingest limit, while it streams
    asset_ids, counts = outline_batch(body)
    for index, asset_id in enumerate(asset_ids):
        visible_asset(request, who, asset_id, f"assets[{index}].assetId")
    # Spread over partitions; an Idempotency-Key's repeats share one (its scope is this route).
    spread = request.headers.get("idempotency-key") or secrets.token_hex(8)
    target = Target(BATCH_ROUTE, partition=f"{BATCH_ROUTE}/{spread}")
    return await _send(request, who, target, body, wait, {"assets": len(asset_ids), **counts})


@router.post("/{asset_id}/data", status_code=202, openapi_extra=_openapi(BODY, REPLY))
async def post_asset_data(asset_id: str, request: Request, who: Principal = Depends(principal),
                          wait: bool = WAIT) -> JSONResponse:
    """Seed 000's data ingest: one asset's machine insights, locations and advanced sensors."""
    who.require("write")
    visible_asset(request, who, asset_id)
    check_rate(request, who)
    body = await request.body()  # producers.edge.limits stops it at the ingest limit, while it streams
    counts = count_entries(body)
    return await _send(request, who, Target(ROUTE, thing_id=asset_id), body, wait, {"assetId": asset_id, **counts})


DIALECT = Dialect("assets", router, re.compile(r"^/v1/assets(?:/|$)"), asset_error_body)
