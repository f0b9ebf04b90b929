"""Catalog API, registry: sites and fleets, and the things in them (seed 001 step 3).

Sites and fleets behave alike, so their routes are declared once per kind. Places
are org-wide: only keys without filters create them; a key whose filters name a
place registers things in it, and a key reaching a thing changes or deletes it.
Handlers are plain functions run in FastAPI's thread pool (catalog writes block).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Request, Response

from catalog.models import PlaceIn, ThingIn, ThingPatch
from catalog.service import Catalog
from catalog.store import page
from producers.api.paging import PageCursor, PageLimit
from producers.edge.auth import Principal, in_place, on_thing, org_wide, principal, thing_for
from producers.edge.errors import from_catalog
from producers.openapi import errors

router = APIRouter(prefix="/v2", tags=["catalog"])


def _catalog(request: Request) -> Catalog:
    return request.app.state.catalog


def _place_routes(kind: str, plural: str) -> None:
    @router.post(f"/{plural}", status_code=201, name=f"create_{kind}", responses=errors(400))
    def create_place(spec: PlaceIn, request: Request, who: Principal = Depends(org_wide(plural))) -> dict:
        return _catalog(request).create_place(who.org_id, kind, spec)

    @router.get(f"/{plural}", name=f"list_{plural}", responses=errors(400))
    def list_places(request: Request, who: Principal = Depends(principal), limit: PageLimit = 100,
                    cursor: PageCursor = None) -> dict:
        who.require("read")
        places = [p for p in _catalog(request).places(who.org_id, kind) if who.may_use_place(p["id"])]
        return page(places, limit, cursor)

    @router.get(f"/{plural}/{{place_id}}", name=f"get_{kind}", responses=errors(404))
    def get_place(place_id: str, request: Request, who: Principal = Depends(principal)) -> dict:
        who.require("read")
        place = _catalog(request).place(who.org_id, place_id, kind)
        who.require_place(place_id)
        return place

    @router.post(f"/{plural}/{{place_id}}/things", status_code=201, name=f"create_thing_in_{kind}",
                 responses=errors(400, 404))
    def create_thing(place_id: str, spec: ThingIn, request: Request,
                     who: Principal = Depends(in_place("place_id"))) -> dict:
        return _catalog(request).create_thing(who.org_id, place_id, kind, spec)

    @router.post(f"/{plural}/{{place_id}}/things/bulk", status_code=207, name=f"create_things_in_{kind}",
                 responses=errors(400, 404))
    def create_things(place_id: str, request: Request, who: Principal = Depends(in_place("place_id")),
                      items: list[Any] = Body(..., description="an array of thing bodies")) -> dict:
        """Register many things; 207 with one report per item ({index, status, id | error})."""
        report = [{"index": index, "status": 201, "id": outcome} if isinstance(outcome, str) else
                  {"index": index, "status": (error := from_catalog(outcome)).status, **error.body()}
                  for index, outcome in enumerate(_catalog(request).create_things(who.org_id, place_id, kind, items))]
        return {"created": sum(1 for r in report if r["status"] == 201), "failed":
                sum(1 for r in report if r["status"] != 201), "items": report}

    @router.get(f"/{plural}/{{place_id}}/things", name=f"list_things_in_{kind}", responses=errors(400, 404))
    def list_things(place_id: str, request: Request, who: Principal = Depends(principal),
                    limit: PageLimit = 100, cursor: PageCursor = None) -> dict:
        who.require("read")
        things = [t for t in _catalog(request).things_in(who.org_id, place_id, kind) if who.may_use_thing(t)]
        return page(things, limit, cursor)


_place_routes("site", "sites")
_place_routes("fleet", "fleets")


@router.get("/things/{thing_id}", responses=errors(404))
def get_thing(thing_id: str, request: Request, who: Principal = Depends(principal)) -> dict:
    return thing_for(request, who, thing_id, "read")


@router.patch("/things/{thing_id}", responses=errors(400, 404))
def update_thing(thing_id: str, patch: ThingPatch, request: Request, who: Principal = Depends(on_thing())) -> dict:
    return _catalog(request).update_thing(who.org_id, thing_id, patch)


@router.delete("/things/{thing_id}", status_code=204, responses=errors(404))
def delete_thing(thing_id: str, request: Request, who: Principal = Depends(on_thing())) -> Response:
    """Forget the thing; its stored readings stay queryable."""
    _catalog(request).delete_thing(who.org_id, thing_id)
    return Response(status_code=204)
