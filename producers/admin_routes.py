"""Operator endpoints for platform-admin keys: read-only SQL on the warehouse.

`format` "rows" (the default) answers one JSON document; "csv", "json" (JSON
lines) and "compact" (JSON lines of arrays, the column names first) stream the
engine's output block by block as it comes, so the edge never holds a whole large result.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from catalog.errors import SluiceError
from producers.auth import Principal, platform_admin
from producers.openapi import errors
from warehouse.backend import STREAM_FORMATS

router = APIRouter(prefix="/v2/admin", tags=["operations"])


class SqlIn(BaseModel):
    sql: str = Field(min_length=1, max_length=16_384)
    format: Literal["rows", "csv", "json", "compact"] = Field(
        "rows", description="rows: one JSON document {columns, rows}; csv (with a header row), json (JSON "
                            "lines, one object per row) and compact (JSON lines of arrays, names first) stream")


_MEDIA = {"csv": "text/csv; charset=utf-8", "json": "application/x-ndjson", "compact": "application/x-ndjson"}
_STREAMED = {"content": {"text/csv": {"schema": {"type": "string"}},
                         "application/x-ndjson": {"schema": {"type": "string"}}}}


@router.post("/sql", responses={200: _STREAMED, **errors(400)})
async def readonly_sql(spec: SqlIn, request: Request, who: Principal = Depends(platform_admin())) -> dict:
    """Run one read-only query (readonly=1) across all orgs; platform-admin keys only."""
    if spec.format != "rows":
        return await _streamed(request.app.state.warehouse, spec)
    try:
        result = await run_in_threadpool(request.app.state.warehouse.readonly_query, spec.sql)
    except Exception as exc:
        raise SluiceError(400, "INVALID_QUERY", str(exc), field="sql") from None
    return {"columns": list(result.column_names), "rows": [[_plain(v) for v in r] for r in result.rows]}


async def _streamed(warehouse, spec: SqlIn) -> StreamingResponse:
    """The result as the engine writes it, chunk by chunk. The first chunk is read
    before answering, so a refused or failing query is still a 400; a failure
    later can only cut the stream short (the client sees a truncated body)."""
    chunks: Iterator[bytes] = iter(())
    try:
        chunks = await run_in_threadpool(warehouse.readonly_stream, spec.sql, STREAM_FORMATS[spec.format])
        first = await run_in_threadpool(next, chunks, b"")
    except Exception as exc:
        await run_in_threadpool(_close, chunks)
        raise SluiceError(400, "INVALID_QUERY", str(exc), field="sql") from None

    async def body() -> AsyncIterator[bytes]:
        try:
            if first:
                yield first
            while chunk := await run_in_threadpool(next, chunks, b""):
                yield chunk
        finally:  # also when the client goes away: the embedded engine's lock is released here
            await run_in_threadpool(_close, chunks)

    return StreamingResponse(body(), media_type=_MEDIA[spec.format])


def _close(chunks: Iterator[bytes]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


def _plain(value: object) -> object:
    return value if isinstance(value, (int, float, str, bool, type(None), list)) else str(value)
