"""Catalog API, harbors (seed 003): the datasets tall points are pushed to, and their
ships and cargos (registered ahead of the data, or provisioned on first sight).

A harbor is a place: a key's place filter naming it reaches the harbor and all its
ships, and registers ships and cargos in it; the harbor itself (creating it, changing
its settings) is org-wide, written only by keys without filters. Handlers are plain
functions run in FastAPI's thread pool (catalog writes block).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from catalog.models import CargoIn, HarborIn, HarborPatch, ShipIn
from catalog.service import Catalog
from catalog.store import page
from producers.api.paging import PageCursor, PageLimit
from producers.edge.auth import Principal, in_place, org_wide, principal
from producers.openapi import errors

router = APIRouter(prefix="/v2/harbors", tags=["catalog"])


def _catalog(request: Request) -> Catalog:
    return request.app.state.catalog


def _harbor(request: Request, who: Principal, harbor_id: str, scope: str) -> dict:
    """The caller's harbor after the scope and filter checks: 403 or 404 otherwise."""
    who.require(scope)
    harbor = _catalog(request).harbor(who.org_id, harbor_id)
    who.require_place(harbor_id)
    return harbor


@router.post("", status_code=201, responses=errors(400))
def create_harbor(spec: HarborIn, request: Request, who: Principal = Depends(org_wide("harbors"))) -> dict:
    return _catalog(request).create_harbor(who.org_id, spec)


@router.get("", responses=errors(400))
def list_harbors(request: Request, who: Principal = Depends(principal), limit: PageLimit = 100,
                 cursor: PageCursor = None) -> dict:
    who.require("read")
    harbors = [h for h in _catalog(request).harbors(who.org_id) if who.may_use_place(h["id"])]
    return page(harbors, limit, cursor)


@router.get("/{harbor_id}", responses=errors(404))
def get_harbor(harbor_id: str, request: Request, who: Principal = Depends(principal)) -> dict:
    return _harbor(request, who, harbor_id, "read")


@router.patch("/{harbor_id}", responses=errors(400, 404))
def update_harbor(harbor_id: str, patch: HarborPatch, request: Request,
                  who: Principal = Depends(org_wide("harbors"))) -> dict:
    return _catalog(request).update_harbor(who.org_id, harbor_id, patch)


@router.post("/{harbor_id}/ships", status_code=201, responses=errors(400, 404, 409))
def register_ship(harbor_id: str, spec: ShipIn, request: Request,
                  who: Principal = Depends(in_place("harbor_id"))) -> dict:
    return _catalog(request).register_ship(who.org_id, harbor_id, spec)


@router.get("/{harbor_id}/ships", responses=errors(400, 404))
def list_ships(harbor_id: str, request: Request, who: Principal = Depends(principal), limit: PageLimit = 100,
               cursor: PageCursor = None) -> dict:
    _harbor(request, who, harbor_id, "read")
    return page(_catalog(request).ships(who.org_id, harbor_id), limit, cursor)


@router.post("/{harbor_id}/cargos", status_code=201, responses=errors(400, 404, 409))
def register_cargo(harbor_id: str, spec: CargoIn, request: Request,
                   who: Principal = Depends(in_place("harbor_id"))) -> dict:
    return _catalog(request).register_cargo(who.org_id, harbor_id, spec)


@router.get("/{harbor_id}/cargos", responses=errors(400, 404))
def list_cargos(harbor_id: str, request: Request, who: Principal = Depends(principal), limit: PageLimit = 100,
                cursor: PageCursor = None) -> dict:
    _harbor(request, who, harbor_id, "read")
    return page(_catalog(request).cargos(who.org_id, harbor_id), limit, cursor)
