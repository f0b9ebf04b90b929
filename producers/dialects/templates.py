"""Seed 001's template ingest: `POST /v2/thing/{thingId}/data/template/{templateId}?previewOnly=`
with the raw third-party JSON as the body, answered with the processing report.

A sibling of the frames dialect (same paths, same error shape). The edge checks
the key, its scope and filters, that the thing and the template are the caller's,
and that the body is JSON; then it pins the template's current revision in the
envelope (`template_id` = `tmpl_…@n`), so the mapping a request gets is the one
current when it was accepted, whatever update follows. The mapping and every
rule about records are the processor's (processors/templates.py).

The seed answers with a report, so the route waits for the verdict by default
(10 s, or `Prefer: wait=N` up to SLUICE_MAX_WAIT_S; `Prefer: respond-async` or
`wait=0` for none). If it does not come in time, 202 with the request id: the
ingest log's entry for it holds the same report.
"""

from __future__ import annotations

import re

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from catalog.templates import revision_id
from producers.dialects.dialect import Dialect, verdict_headers
from producers.dialects.frames import verdict_response as frames_verdict_response
from producers.edge.auth import Principal, principal, thing_for
from producers.edge.errors import ApiError
from producers.edge.submit import DEFAULT_WAIT_S, Target, check_rate, json_document, requested_wait, submit
from producers.openapi import errors

router = APIRouter(prefix="/v2", tags=["ingest"])

SKIPPED = {"type": "object", "required": ["index", "reason", "value"], "properties": {
    "index": {"type": "integer", "description": "the record's position in the records array"},
    "reason": {"type": "string", "description": "missing_timestamp, invalid_timestamp, invalid_value, "
                                                "unknown_metric, no_metric_values or expression_failed"},
    "value": {"description": "the offending value (a timestamp, a value, a metric name), or null"}}}
REPORT = {"type": "object", "required": ["previewOnly", "templateId", "templateRevision", "recordsParsed",
                                         "readingsWritten", "metricValuesWritten", "recordsSkipped"],
          "properties": {
              "previewOnly": {"type": "boolean"},
              "templateId": {"type": "string"},
              "templateRevision": {"type": "integer", "description": "the revision the payload was mapped with"},
              "recordsParsed": {"type": "integer"},
              "readingsWritten": {"type": "integer", "description": "records written (each a reading at its time)"},
              "metricValuesWritten": {"type": "integer"},
              "recordsSkipped": {"type": "array", "items": SKIPPED, "maxItems": 1000},
              "recordsSkippedTruncated": {"type": "boolean", "description": "present when more than 1000 "
                                          "records were skipped; the count is recordsParsed - readingsWritten"},
              "requestId": {"type": "string"}}}
RAW_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "description": "the raw external JSON, as-is; the template says where its records are"}}}}}


def check_json(body: bytes) -> None:
    """Answer at once what no template maps: an empty body, or one that is not JSON."""
    json_document(body)


def _wait(request: Request) -> float | None:
    """How long to wait for the report: 10 s by default (the seed answers with it), `Prefer:
    wait=N` (0: not at all), or not at all with `Prefer: respond-async`."""
    if "respond-async" in request.headers.get("prefer", "").lower():
        return None
    max_wait = request.app.state.settings.max_wait_s
    requested = requested_wait(request, False, max_wait)
    return min(DEFAULT_WAIT_S, max_wait) if requested is None else requested or None


def report_response(verdict: dict) -> JSONResponse:
    """The seed's processing report (200), or the rule's error, as the frames route answers it."""
    if verdict["http_status"] != 200 or not verdict.get("report"):
        return frames_verdict_response(verdict)
    headers = verdict_headers(verdict)
    report = {**orjson.loads(verdict["report"]), "requestId": verdict["request_id"]}
    return JSONResponse(report, status_code=200, headers=headers)


@router.post("/thing/{thing_id}/data/template/{template_id}", status_code=200, openapi_extra=RAW_BODY, responses={
    200: {"description": "the processing report", "content": {"application/json": {"schema": REPORT}}},
    202: {"description": "accepted and durable, not mapped within the wait; the ingest log's entry for "
                         "`requestId` holds the report"},
    **errors(400, 404, 424, 503)})
async def post_template_data(thing_id: str, template_id: str, request: Request,
                             who: Principal = Depends(principal),
                             preview_only: bool = Query(False, alias="previewOnly",
                                                        description="map and report without persisting"),
                             ) -> JSONResponse:
    thing_for(request, who, thing_id, "write")
    template = request.app.state.catalog.view.get("template", template_id, who.org_id)
    if template is None:
        raise ApiError(404, "TEMPLATE_NOT_FOUND", f"template {template_id[:64]!r} not found", field="templateId")
    check_rate(request, who)
    body = await request.body()  # producers.edge.limits stops it at the ingest limit, while it streams
    check_json(body)
    wait_s = _wait(request)
    route = "thing_template_preview" if preview_only else "thing_template"
    pinned = revision_id(template_id, template["revision"])  # a later update cannot change this request's mapping
    done = await submit(request, who, Target(route, thing_id=thing_id, template_id=pinned), body, wait_s)
    if done.verdict is not None:
        reply = report_response(done.verdict)
        reply.headers["Preference-Applied"] = f"wait={done.waited_s:g}"
        return reply
    return JSONResponse({"requestId": done.request_id, "thingId": thing_id, "templateId": template_id,
                         "templateRevision": template["revision"], "status": "accepted"}, status_code=202,
                        headers={"X-Request-Id": done.request_id})


# The frames dialect's paths already cover this route (its error shape, the ingest body limit).
DIALECT = Dialect("templates", router, re.compile(r"^/v2/thing/[^/]+/data/template(?:/|$)"))
