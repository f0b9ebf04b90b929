"""Catalog API, templates (seed 001, "Ingesting via templates"): create, list, get,
update (each update a new revision; old revisions stay readable), delete.

A template that does not compile, or maps a metric the org has not defined, is
a 400 naming the field and the expression. Another org's template is 404. Templates
are org-wide: only keys without filters write them; every key of the org reads them.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request, Response

from catalog.models import TemplateIn
from catalog.service import Catalog
from catalog.store import page
from producers.api.paging import PageCursor, PageLimit
from producers.edge.auth import Principal, org_wide, principal
from producers.openapi import errors

router = APIRouter(prefix="/v2", tags=["catalog"])


def _catalog(request: Request) -> Catalog:
    return request.app.state.catalog


@router.post("/templates", status_code=201, responses=errors(400))
def create_template(spec: TemplateIn, request: Request, who: Principal = Depends(org_wide("templates"))) -> dict:
    return _catalog(request).create_template(who.org_id, spec)


@router.get("/templates", responses=errors(400))
def list_templates(request: Request, who: Principal = Depends(principal), limit: PageLimit = 100,
                   cursor: PageCursor = None) -> dict:
    who.require("read")
    return page(_catalog(request).templates(who.org_id), limit, cursor)


@router.get("/templates/{template_id}", responses=errors(404))
def get_template(template_id: str, request: Request, who: Principal = Depends(principal)) -> dict:
    """The template's current revision (`revision` is its number)."""
    who.require("read")
    return _catalog(request).template(who.org_id, template_id)


@router.put("/templates/{template_id}", responses=errors(400, 404))
def update_template(template_id: str, spec: TemplateIn, request: Request,
                    who: Principal = Depends(org_wide("templates"))) -> dict:
    """A new revision, the template's current one from now on; requests already accepted
    keep the revision they were accepted with."""
    return _catalog(request).update_template(who.org_id, template_id, spec)


@router.get("/templates/{template_id}/revisions/{revision}", responses=errors(400, 404))
def get_template_revision(template_id: str, request: Request, who: Principal = Depends(principal),
                          revision: int = Path(ge=1, le=2**31 - 1)) -> dict:
    who.require("read")
    return _catalog(request).template_revision(who.org_id, template_id, revision)


@router.delete("/templates/{template_id}", status_code=204, responses=errors(404))
def delete_template(template_id: str, request: Request, who: Principal = Depends(org_wide("templates"))) -> Response:
    _catalog(request).delete_template(who.org_id, template_id)
    return Response(status_code=204)
