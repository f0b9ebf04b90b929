"""Operator endpoints for platform-admin keys: read-only SQL on the warehouse, bounded.

Each query runs within the analyst limits (SLUICE_SQL_*: deadline, memory,
result rows and bytes), on one of SLUICE_SQL_CONCURRENCY slots whose warehouse
sessions are never the sinks' or the read API's; with every slot taken the
answer is 429 at once. A client that goes away stops its query
(producers.api.sql_answers). `format` "csv", "json" (JSON lines) and "compact" (JSON
lines of arrays, the column names first) stream the engine's output as it comes;
"rows" (the default) is one JSON document built from the same compact stream,
refused past SLUICE_SQL_ROWS_MAX_BYTES, so the edge never holds more of a result.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from config import Settings
from producers.api.sql_answers import Streamed, Watched, rows_document
from producers.edge.auth import Principal, platform_admin
from producers.edge.errors import ApiError
from producers.openapi import ERROR_REF, errors
from warehouse import WarehouseBusy, WarehouseError, limits
from warehouse.backend import STREAM_FORMATS

router = APIRouter(prefix="/v2/admin", tags=["operations"])

#: Seconds a caller refused for want of a slot is asked to wait.
RETRY_AFTER_S = 1


class SqlIn(BaseModel):
    sql: str = Field(min_length=1, max_length=16_384)
    format: Literal["rows", "csv", "json", "compact"] = Field(
        "rows", description="rows: one JSON document {columns, rows} (at most SLUICE_SQL_ROWS_MAX_BYTES); csv "
                            "(with a header row), json (JSON lines, one object per row) and compact (JSON lines "
                            "of arrays, names first) stream")


_MEDIA = {"csv": "text/csv; charset=utf-8", "json": "application/x-ndjson", "compact": "application/x-ndjson"}
_JSON_ERROR = {"application/json": {"schema": ERROR_REF}}
SQL_RESPONSES = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}},
                      "application/x-ndjson": {"schema": {"type": "string"}}}},
    **errors(400),
    422: {"description": "QUERY_TIMEOUT, QUERY_MEMORY_LIMIT or RESULT_TOO_LARGE: the query ran into one of its "
                         "bounds (`details.setting` names it) before its answer began", "content": _JSON_ERROR},
    429: {**errors(429)[429], "description": "TOO_MANY_QUERIES: every analyst query slot is taken "
                                             "(SLUICE_SQL_CONCURRENCY); see Retry-After"},
}


@router.post("/sql", responses=SQL_RESPONSES)
async def readonly_sql(spec: SqlIn, request: Request, who: Principal = Depends(platform_admin())) -> dict:
    """Run one read-only query (readonly=1) across all orgs, within the analyst bounds; platform-admin keys only."""
    return await answer(spec, request)


async def answer(spec: SqlIn, request: Request, org_id: str | None = None) -> Response:
    """The answer to `spec`, across all orgs or (with `org_id`) over that org's rows alone."""
    settings: Settings = request.app.state.settings
    wire = STREAM_FORMATS["compact" if spec.format == "rows" else spec.format]
    try:
        stream = await run_in_threadpool(request.app.state.warehouse.readonly_stream, spec.sql, wire, org_id)
    except WarehouseBusy as exc:
        raise ApiError(429, "TOO_MANY_QUERIES", str(exc), limit=settings.sql_concurrency,
                       retry_after=RETRY_AFTER_S) from None
    except Exception as exc:
        raise refused(exc, settings) from None
    source = Watched(request, stream)
    try:
        first = await source.next()
        if spec.format != "rows":
            return Streamed(source, first, _MEDIA[spec.format], lambda exc: refused(exc, settings))
        return Response(await _document(source, first, settings.sql_rows_max_bytes), media_type="application/json")
    except Exception as exc:
        await source.aclose()
        if isinstance(exc, (ApiError, WarehouseError)):
            raise refused(exc, settings) from None
        raise


async def _document(source: Watched, first: bytes, limit: int) -> bytes:
    chunks, size, chunk = [], 0, first
    while chunk:
        size += len(chunk)
        if size > limit:
            raise ApiError(422, "RESULT_TOO_LARGE", f"the result passes {limit} bytes, the most the `rows` "
                           "format answers: add a LIMIT, or ask for csv, json or compact, which stream",
                           field="sql", setting="SLUICE_SQL_ROWS_MAX_BYTES", limit=limit)
        chunks.append(chunk)
        chunk = await source.next()
    await source.aclose()
    return b"".join(rows_document(chunks))


#: The API's code for each bound a query can run into.
_BOUND_CODES = {limits.TIMEOUT_EXCEEDED: "QUERY_TIMEOUT", limits.MEMORY_LIMIT_EXCEEDED: "QUERY_MEMORY_LIMIT",
                limits.TOO_MANY_ROWS_OR_BYTES: "RESULT_TOO_LARGE"}


def refused(exc: Exception, settings: Settings) -> ApiError:
    """The answer to a query the warehouse refused or failed: 422 naming the bound it ran
    into, else 400 INVALID_QUERY with the engine's reason."""
    if isinstance(exc, ApiError):
        return exc
    code = getattr(exc, "code", None)
    bound = limits.QueryLimits.from_settings(settings).exceeded(code, str(exc))
    if bound is None:
        return ApiError(400, "INVALID_QUERY", str(exc), field="sql")
    setting, words = bound
    return ApiError(422, _BOUND_CODES[code], f"{words} ({setting}); the engine said: {exc}", field="sql",
                    setting=setting)
