"""Catalog API, data sources (seed 004): create, list, get.

A data source is found by its catalog id or its externalId; another org's is
404. Data sources are org-wide: only keys without filters create them. A key
whose filters name streams reaches (reads, and inserts into) the data sources
they name, by id or externalId.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from catalog.models import DataSourceIn
from catalog.service import Catalog
from catalog.store import page
from producers.api.paging import PageCursor, PageLimit
from producers.dialects.datasource import may_use
from producers.edge.auth import Principal, org_wide, principal
from producers.edge.errors import ApiError
from producers.openapi import errors

router = APIRouter(prefix="/v2", tags=["catalog"])


def _catalog(request: Request) -> Catalog:
    return request.app.state.catalog


@router.post("/datasources", status_code=201, responses=errors(400, 409))
def create_datasource(spec: DataSourceIn, request: Request,
                      who: Principal = Depends(org_wide("data sources"))) -> dict:
    catalog = _catalog(request)
    created = catalog.create_datasource(who.org_id, spec)
    return catalog.datasource_view(who.org_id, created)


@router.get("/datasources", responses=errors(400))
def list_datasources(request: Request, who: Principal = Depends(principal), limit: PageLimit = 100,
                     cursor: PageCursor = None) -> dict:
    who.require("read")
    catalog = _catalog(request)
    reached = [catalog.datasource_view(who.org_id, d) for d in catalog.datasources(who.org_id) if may_use(who, d)]
    return page(reached, limit, cursor)


@router.get("/datasources/{datasource_id}", responses=errors(404))
def get_datasource(datasource_id: str, request: Request, who: Principal = Depends(principal)) -> dict:
    """A data source by id or externalId, with its schema (`schemaSource`: declared or inferred)."""
    who.require("read")
    catalog = _catalog(request)
    datasource = catalog.datasource(who.org_id, datasource_id)
    if not may_use(who, datasource):
        raise ApiError(403, "FORBIDDEN", f"this key's filters do not cover data source {datasource_id!r}")
    return catalog.datasource_view(who.org_id, datasource)
