"""Record streams (seed 002) and the per-key log of ingest requests (seed 002's connector log).

Streams are org-wide catalog entities: created by keys without filters holding the
write scope, read with read; a key with stream filters sees only its streams (403
for the others), another org's stream is 404. The log of a key lists the requests it made, newest first,
with their verdicts: readable by the key itself, or by an admin key no broader
than it (the same rule as for revoking it).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from catalog.models import StreamIn
from catalog.service import Catalog
from catalog.store import cursor_at, page, position
from producers.api.paging import PageCursor, PageLimit
from producers.edge.auth import Principal, org_wide, principal
from producers.edge.errors import ApiError
from producers.openapi import errors
from warehouse.queries import key_log

router = APIRouter(prefix="/v2", tags=["streams"])


def _catalog(request: Request) -> Catalog:
    return request.app.state.catalog


@router.post("/streams", status_code=201, responses=errors(400, 409))
def create_stream(spec: StreamIn, request: Request, who: Principal = Depends(org_wide("streams"))) -> dict:
    """A stream of the caller's org; its name is unique there (409 otherwise) and never changes."""
    return _catalog(request).create_stream(who.org_id, spec)


@router.get("/streams", responses=errors(400))
def list_streams(request: Request, who: Principal = Depends(principal), limit: PageLimit = 100,
                 cursor: PageCursor = None) -> dict:
    """The org's streams the caller's key reaches."""
    who.require("read")
    streams = [s for s in _catalog(request).streams(who.org_id) if who.may_use_stream(s["name"])]
    return page(streams, limit, cursor)


@router.get("/streams/{stream_ref}", responses=errors(404))
def get_stream(stream_ref: str, request: Request, who: Principal = Depends(principal)) -> dict:
    """One stream, by id (`stm_…`) or by name."""
    who.require("read")
    stream = _catalog(request).stream(who.org_id, stream_ref)
    if not who.may_use_stream(stream["name"]):
        raise ApiError(403, "FORBIDDEN", f"this key's filters do not cover stream {stream['name']!r}")
    return stream


@router.get("/api-keys/{key_id}/log", responses=errors(400, 404, 503))
async def get_key_log(key_id: str, request: Request, who: Principal = Depends(principal),
                      limit: PageLimit = 50, cursor: PageCursor = None) -> dict:
    """The requests made with one key, newest first: when each was received, its request id,
    stream, items received and ingested, status and errors. A request's entry appears once
    the processor has judged it (a moment after its 202). Pages follow `nextCursor`."""
    if who.key["id"] != key_id:
        who.require("admin")
        _catalog(request).api_key_for(who.org_id, key_id, holder=who.key, verb="read the log of")
    before = position(cursor) if cursor is not None else None
    entries = await run_in_threadpool(key_log, request.app.state.warehouse, who.org_id, key_id, limit + 1, before)
    more, entries = len(entries) > limit, entries[:limit]
    return {"items": [_entry(e) for e in entries],
            "nextCursor": cursor_at(entries[-1]["received_at"], entries[-1]["request_id"]) if more else None}


def _entry(v: dict) -> dict:
    return {
        "timestamp": v["received_at"],
        "requestId": v["request_id"],
        "route": v["route"],
        "stream": v["stream"],
        "thingId": v["thing_id"],
        "itemsReceived": v["frames_received"],  # items, frames or records, by route
        "itemsIngested": v["frames_ingested"],
        "status": v["status"],
        "httpStatus": v["http_status"],
        "errors": v["errors"],
        "duplicateOf": v["duplicate_of"],
        "processedAt": v["processed_at"],
    }
