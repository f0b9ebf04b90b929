"""Catalog API, definitions: metrics and thing types with their versions (seed 001 steps 1–2).

Definitions are org-wide: only keys without filters write them (`org_wide`), while
every key of the org reads them, since a filtered key ingests against them.
Handlers are plain functions: FastAPI runs them in its thread pool, since a
catalog write blocks until Kafka and the local view confirm it.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from catalog.models import MetricDefinitionIn, MetricPatch, ThingTypeIn, ThingTypeVersionIn
from catalog.service import Catalog
from catalog.store import page
from producers.api.paging import PageCursor, PageLimit
from producers.edge.auth import Principal, org_wide, principal
from producers.openapi import errors

router = APIRouter(prefix="/v2/definitions", tags=["catalog"])


def _catalog(request: Request) -> Catalog:
    return request.app.state.catalog


@router.post("/metrics", status_code=201, responses=errors(400, 409))
def create_metric(spec: MetricDefinitionIn, request: Request,
                  who: Principal = Depends(org_wide("metric definitions"))) -> dict:
    return _catalog(request).create_metric(who.org_id, spec)


@router.get("/metrics", responses=errors(400))
def list_metrics(request: Request, who: Principal = Depends(principal), limit: PageLimit = 100,
                 cursor: PageCursor = None) -> dict:
    who.require("read")
    return page(_catalog(request).metrics(who.org_id), limit, cursor)


@router.get("/metrics/{metric_id}", responses=errors(404))
def get_metric(metric_id: str, request: Request, who: Principal = Depends(principal)) -> dict:
    who.require("read")
    return _catalog(request).metric(who.org_id, metric_id)


@router.patch("/metrics/{metric_id}", responses=errors(400, 404))
def update_metric(metric_id: str, patch: MetricPatch, request: Request,
                  who: Principal = Depends(org_wide("metric definitions"))) -> dict:
    return _catalog(request).update_metric(who.org_id, metric_id, patch)


@router.post("/thing-types", status_code=201, responses=errors(400, 404))
def create_thing_type(spec: ThingTypeIn, request: Request, who: Principal = Depends(org_wide("thing types"))) -> dict:
    return _catalog(request).create_thing_type(who.org_id, spec)


@router.get("/thing-types", responses=errors(400))
def list_thing_types(request: Request, who: Principal = Depends(principal), limit: PageLimit = 100,
                     cursor: PageCursor = None) -> dict:
    who.require("read")
    return page(_catalog(request).thing_types(who.org_id), limit, cursor)


@router.get("/thing-types/{type_id}", responses=errors(404))
def get_thing_type(type_id: str, request: Request, who: Principal = Depends(principal)) -> dict:
    who.require("read")
    return _catalog(request).thing_type(who.org_id, type_id)


@router.post("/thing-types/{type_id}/versions", status_code=201, responses=errors(400, 404))
def create_thing_type_version(type_id: str, spec: ThingTypeVersionIn, request: Request,
                              who: Principal = Depends(org_wide("thing types and their versions"))) -> dict:
    """A new version becomes the type's latest; existing things keep theirs (new ones get it)."""
    return _catalog(request).create_thing_type_version(who.org_id, type_id, spec)


@router.get("/thing-types/{type_id}/versions/{version_id}", responses=errors(404))
def get_thing_type_version(type_id: str, version_id: str, request: Request,
                           who: Principal = Depends(principal)) -> dict:
    who.require("read")
    return _catalog(request).thing_type_version(who.org_id, type_id, version_id)


@router.post("/presets/{preset}", status_code=201, responses={
    200: {"description": "already installed: nothing was written (same ids)"}, **errors(404, 409)})
def install_preset(preset: str, request: Request, who: Principal = Depends(org_wide("presets"))) -> JSONResponse:
    """Install a standard metric set in the caller's org (`iso15143-3`: the ISO 15143-3 machine
    insights and the thing type "ISO 15143-3 machine"). Idempotent: 201 when it wrote
    something, 200 with the same ids when everything was there already."""
    summary, created = _catalog(request).install_preset(who.org_id, preset)
    return JSONResponse(summary, status_code=201 if created else 200)
