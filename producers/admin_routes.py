"""Operator endpoints for platform-admin keys: read-only SQL on the warehouse."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from catalog import keys
from catalog.errors import SluiceError
from producers.auth import Principal, principal
from producers.openapi import errors

router = APIRouter(prefix="/v2/admin", tags=["operations"])


class SqlIn(BaseModel):
    sql: str = Field(min_length=1, max_length=16_384)


@router.post("/sql", responses=errors(400))
async def readonly_sql(spec: SqlIn, request: Request, who: Principal = Depends(principal)) -> dict:
    """Run one read-only query (readonly=1) across all orgs; platform-admin keys only."""
    if keys.PLATFORM_ADMIN not in who.key.get("scopes", ()):
        raise SluiceError(403, "FORBIDDEN", "read-only SQL needs a platform-admin key")
    try:
        result = await run_in_threadpool(request.app.state.warehouse.readonly_query, spec.sql)
    except Exception as exc:
        raise SluiceError(400, "INVALID_QUERY", str(exc), field="sql") from None
    return {"columns": list(result.column_names), "rows": [[_plain(v) for v in r] for r in result.rows]}


def _plain(value: object) -> object:
    return value if isinstance(value, (int, float, str, bool, type(None), list)) else str(value)
