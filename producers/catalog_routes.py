"""Catalog API: metrics, thing types, places and things (seed 001 steps 1–3).

Handlers are plain functions: FastAPI runs them in its thread pool, since a
catalog write blocks until Kafka and the local view confirm it.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from catalog.models import MetricDefinitionIn, PlaceIn, ThingIn, ThingPatch, ThingTypeIn
from catalog.service import Catalog
from producers.auth import Principal, principal

router = APIRouter(prefix="/v2", tags=["catalog"])


def _catalog(request: Request) -> Catalog:
    return request.app.state.catalog


@router.post("/definitions/metrics", status_code=201)
def create_metric(spec: MetricDefinitionIn, request: Request, who: Principal = Depends(principal)) -> dict:
    who.require("write")
    return _catalog(request).create_metric(who.org_id, spec)


@router.get("/definitions/metrics/{metric_id}")
def get_metric(metric_id: str, request: Request, who: Principal = Depends(principal)) -> dict:
    who.require("read")
    return _catalog(request).metric(who.org_id, metric_id)


@router.post("/definitions/thing-types", status_code=201)
def create_thing_type(spec: ThingTypeIn, request: Request, who: Principal = Depends(principal)) -> dict:
    who.require("write")
    return _catalog(request).create_thing_type(who.org_id, spec)


@router.post("/sites", status_code=201)
def create_site(spec: PlaceIn, request: Request, who: Principal = Depends(principal)) -> dict:
    who.require("write")
    return _catalog(request).create_place(who.org_id, "site", spec)


@router.post("/fleets", status_code=201)
def create_fleet(spec: PlaceIn, request: Request, who: Principal = Depends(principal)) -> dict:
    who.require("write")
    return _catalog(request).create_place(who.org_id, "fleet", spec)


@router.post("/sites/{place_id}/things", status_code=201)
def create_thing_in_site(place_id: str, spec: ThingIn, request: Request,
                         who: Principal = Depends(principal)) -> dict:
    who.require("write")
    return _catalog(request).create_thing(who.org_id, place_id, "site", spec)


@router.post("/fleets/{place_id}/things", status_code=201)
def create_thing_in_fleet(place_id: str, spec: ThingIn, request: Request,
                          who: Principal = Depends(principal)) -> dict:
    who.require("write")
    return _catalog(request).create_thing(who.org_id, place_id, "fleet", spec)


@router.patch("/things/{thing_id}")
def update_thing(thing_id: str, patch: ThingPatch, request: Request, who: Principal = Depends(principal)) -> dict:
    who.require("write")
    return _catalog(request).update_thing(who.org_id, thing_id, patch)


@router.get("/things/{thing_id}")
def get_thing(thing_id: str, request: Request, who: Principal = Depends(principal)) -> dict:
    who.require("read")
    return _catalog(request).thing(who.org_id, thing_id)
