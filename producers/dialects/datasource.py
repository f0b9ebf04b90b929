"""The data-source dialect (seed 004): `POST /restapi/datasource/insert` with
`{"datasource_id", "data": [records]}` and `Authorization: Bearer`.

The seed's 200 says "Data successfully inserted", so this route always waits
for the processor's verdict (the rulebook is processors/datasource_records.py):
200 once the records are validated and durably on their way to the
`datasource_records` table, or the rule's 4xx. If the verdict does not come
within the wait (10 s, or `Prefer: wait=N` up to SLUICE_MAX_WAIT_S), it answers
202 with the request id: accepted and durable, not yet judged (the ingest log
will have the verdict).

The edge checks the key, its scope and filters, the body's outline (a JSON
object with a `datasource_id` string and a non-empty `data` array) and that the
data source is the caller's; every rule about the records is the processor's.
Errors answer in the seed's style: `{"message", "error": CODE, "details"}`.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from producers.dialects.dialect import Dialect, verdict_headers
from producers.edge.auth import Principal, principal
from producers.edge.errors import ApiError
from producers.edge.submit import DEFAULT_WAIT_S, Target, check_rate, json_document, outline_error, requested_wait, submit
from producers.openapi import DESCRIPTIONS, RETRY_AFTER

router = APIRouter(tags=["ingest"])

INSERTED = "Data successfully inserted"
_RECORD_FIELD = re.compile(r"data\[(\d+)\]")


def error_body(error: ApiError) -> dict:
    """The seed's error shape: a descriptive `message` first, then the code and details."""
    body: dict = {"message": error.message, "error": error.code}
    if error.details:
        body["details"] = error.details
    return body


ERROR_SCHEMA = {"type": "object", "required": ["message", "error"], "properties": {
    "message": {"type": "string", "description": "what went wrong, for a person"},
    "error": {"type": "string", "description": "machine-readable code, e.g. SCHEMA_MISMATCH"},
    "details": {"type": "object", "additionalProperties": True,
                "description": "`field` names the offending field (`data[1].value`), `index` the record"}}}
RECORD = {"type": "object", "minProperties": 1, "additionalProperties": {
    "type": ["string", "number", "boolean", "null"]}, "description": "one record: field name → value"}
INSERT_BODY = {
    "security": [{"ApiKey": []}, {"Bearer": []}],  # as every route: the seed's clients use Bearer
    "requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["datasource_id", "data"], "properties": {
            "datasource_id": {"type": "string", "minLength": 1,
                              "description": "the data source's id (dsrc_…) or its externalId"},
            "data": {"type": "array", "minItems": 1, "items": RECORD}}}}}}}


def _responses(*statuses: int) -> dict:
    declared: dict = {}
    for status in statuses:
        declared[status] = {"description": DESCRIPTIONS.get(status, "see the README's error table"),
                            "content": {"application/json": {"schema": ERROR_SCHEMA}}}
        if status in (429, 503):
            declared[status]["headers"] = RETRY_AFTER
    return declared


def check_structure(body: bytes) -> str:
    """The body's outline, answered at once (400 INVALID_PAYLOAD): a JSON object with a
    non-empty `datasource_id` string and a non-empty `data` array. Returns the id."""
    invalid = outline_error
    document = json_document(body)
    if not isinstance(document, dict):
        raise invalid("body", "must be a JSON object")
    datasource_id = document.get("datasource_id")
    if datasource_id is None:
        raise invalid("datasource_id", "required, the identifier of the target data source")
    if not isinstance(datasource_id, str) or not datasource_id:
        raise invalid("datasource_id", "must be a non-empty string")
    data = document.get("data")
    if not isinstance(data, list):
        raise invalid("data", "required, an array of records" if data is None else "must be an array of records")
    if not data:
        raise invalid("data", "at least one record is required")
    return datasource_id


def verdict_response(verdict: dict) -> JSONResponse:
    """200 with the seed's message (the request id is in X-Request-Id), or the rule's error
    (its record index in `details.index`)."""
    headers = verdict_headers(verdict)
    if verdict["http_status"] == 200:
        return JSONResponse({"message": INSERTED}, status_code=200, headers=headers)  # the seed's, exactly
    first = verdict["errors"][0] if verdict["errors"] else {"code": "REJECTED", "message": "rejected"}
    details = {"request_id": verdict["request_id"]}
    if first.get("field"):
        details["field"] = first["field"]
        if record := _RECORD_FIELD.match(first["field"]):
            details["index"] = int(record.group(1))
    body = {"message": first["message"], "error": first["code"], "details": details}
    return JSONResponse(body, status_code=verdict["http_status"], headers=headers)


@router.post("/restapi/datasource/insert", status_code=200, openapi_extra=INSERT_BODY, responses={
    200: {"description": "inserted", "content": {"application/json": {"schema": {
        "type": "object", "required": ["message"], "properties": {"message": {"const": INSERTED}}}}}},
    202: {"description": "accepted and durable, but not judged within the wait; `request_id` finds its verdict",
          "content": {"application/json": {"schema": {"type": "object", "required": ["message", "request_id"],
                                                      "properties": {"message": {"type": "string"},
                                                                     "request_id": {"type": "string"}}}}}},
    **_responses(400, 401, 403, 404, 408, 413, 415, 422, 429, 500, 503)})
async def insert_records(request: Request, who: Principal = Depends(principal)) -> JSONResponse:
    """Insert records into a data source (seed 004)."""
    who.require("write")
    check_rate(request, who)
    body = await request.body()  # producers.edge.limits stops it at the ingest limit, while it streams
    reference = check_structure(body)
    catalog = request.app.state.catalog
    datasource = catalog.view.get("datasource", reference, who.org_id) or \
        catalog.view.datasource_by_external_id(who.org_id, reference)
    if datasource is None:
        raise ApiError(404, "DATASOURCE_NOT_FOUND", f"data source {reference[:64]!r} not found",
                       field="datasource_id")
    if not may_use(who, datasource):
        raise ApiError(403, "FORBIDDEN", f"this key may not write data source {reference[:64]!r}",
                       field="datasource_id")
    max_wait = request.app.state.settings.max_wait_s
    wait_s = requested_wait(request, False, max_wait) or min(DEFAULT_WAIT_S, max_wait)
    done = await submit(request, who, Target("datasource_insert", stream=datasource["id"]), body, wait_s)
    if done.verdict is not None:
        return verdict_response(done.verdict)
    return JSONResponse({"message": "Data accepted; it is still being processed (see the ingest log for its "
                                    "verdict)", "request_id": done.request_id}, status_code=202,
                        headers={"X-Request-Id": done.request_id})


def may_use(who: Principal, datasource: dict) -> bool:
    """A filtered key reaches a data source its `streams` filter names, by id or externalId."""
    return who.may_use_stream(datasource["id"]) or (
        bool(datasource.get("externalId")) and who.may_use_stream(datasource["externalId"]))


DIALECT = Dialect("datasource", router, re.compile(r"^/restapi/datasource(?:/|$)"), error_body)
