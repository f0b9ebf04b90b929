"""Ingest log API: the processor's verdict on each request, from the warehouse.

A verdict lands in the ingest_log table a moment after the processor decides
(results topic → ingest-log sink), so a request just accepted with 202 may not
have one yet.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from producers.edge.auth import Principal, principal
from producers.edge.errors import ApiError
from producers.openapi import errors
from warehouse.queries import ingest_verdict, recent_verdicts

router = APIRouter(prefix="/v2", tags=["ingest"])


@router.get("/ingest-log/{request_id}", responses=errors(404, 503))
async def get_ingest_verdict(request_id: str, request: Request, who: Principal = Depends(principal)) -> dict:
    """The newest verdict on one of the caller's requests; 404 NOT_FOUND if none is stored yet
    (or the request id belongs to another organization)."""
    who.require("read")
    verdict = await run_in_threadpool(ingest_verdict, request.app.state.warehouse, who.org_id, request_id)
    if verdict is None or not _visible(request, who, verdict):
        raise ApiError(404, "NOT_FOUND",
                       f"no verdict for request {request_id!r}: the request is unknown, or it is still "
                       "being processed (verdicts are written a few seconds after the 202); retry shortly",
                       id=request_id)
    return _public(verdict)


@router.get("/ingest-log", responses=errors(400, 503))
async def list_ingest_verdicts(request: Request, who: Principal = Depends(principal),
                               thing_id: str | None = Query(None, alias="thingId", max_length=64),
                               limit: int = Query(50, ge=1, le=1000)) -> dict:
    """The caller's most recently processed requests, newest first, one verdict each."""
    who.require("read")
    verdicts = await run_in_threadpool(recent_verdicts, request.app.state.warehouse, who.org_id, thing_id, limit)
    return {"items": [_public(v) for v in verdicts if _visible(request, who, v)]}


def _visible(request: Request, who: Principal, verdict: dict) -> bool:
    """Whether a key may see a verdict: its own requests always; otherwise its resource
    filters must cover the verdict's thing, or the stream, data source or harbor it wrote
    (no filters: all of them)."""
    if not who.filtered or verdict.get("key_id") == who.key["id"]:
        return True
    if verdict["thing_id"]:
        thing = request.app.state.catalog.view.get("thing", verdict["thing_id"], who.org_id)
        return thing is not None and who.may_use_thing(thing)
    target = verdict.get("stream") or ""
    return bool(target) and (who.may_use_stream(target) or who.may_use_place(target))


def _public(v: dict[str, Any]) -> dict:
    return {
        "requestId": v["request_id"],
        "thingId": v["thing_id"],
        "stream": v.get("stream") or None,
        "route": v["route"],
        "status": v["status"],
        "httpStatus": v["http_status"],
        "framesReceived": v["frames_received"],
        "framesIngested": v["frames_ingested"],
        "metrics": v["metrics"],
        "errors": v["errors"],
        "duplicateOf": v["duplicate_of"],
        "receivedAt": v["received_at"],
        "processedAt": v["processed_at"],
        # a template request's processing report (seed 001), as its sync reply showed it
        **({"report": v["report"]} if v.get("report") else {}),
    }
