"""Org-scoped SQL: an org key's read-only query over its own org's rows.

The query names the tables as the analyst's guide does (`sluice.readings`, …) and
sees only its org's rows of them (warehouse.scoping); anything else it names (system
tables, table functions, dictionaries, other databases, SETTINGS) is refused with
400. The bounds, slots and formats are the admin route's (producers.api.admin).
Keys with resource filters are refused (403): the views are per org, not per filter.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from producers.api.admin import SQL_RESPONSES, SqlIn, answer
from producers.edge.auth import Principal, org_reader

router = APIRouter(prefix="/v2", tags=["analytics"])


@router.post("/sql", responses=SQL_RESPONSES)
async def org_sql(spec: SqlIn, request: Request, who: Principal = Depends(org_reader())) -> Response:
    """Run one read-only query over the caller's org's rows, within the analyst bounds; a read key without filters."""
    return await answer(spec, request, who.org_id)
