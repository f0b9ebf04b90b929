"""Access API: orgs (platform admin) and API keys (org admins)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from catalog.access import public_key
from catalog.models import ApiKeyIn, OrgIn
from catalog.service import Catalog
from producers.edge.auth import Principal, key_admin, platform_admin, principal
from producers.openapi import errors

router = APIRouter(prefix="/v2", tags=["access"])


def _catalog(request: Request) -> Catalog:
    return request.app.state.catalog


@router.post("/orgs", status_code=201, responses=errors(400))
def create_org(spec: OrgIn, request: Request, who: Principal = Depends(platform_admin())) -> dict:
    """A new tenant and its first admin key; the secret (`key`) is shown only here."""
    org, key, secret = _catalog(request).create_org(spec)
    return {**org, "adminKey": {**public_key(key), "key": secret}}


@router.get("/orgs/current", responses=errors(404))
def current_org(request: Request, who: Principal = Depends(principal)) -> dict:
    who.require("read")
    return _catalog(request).org(who.org_id)


@router.post("/api-keys", status_code=201, responses=errors(400, 404))
def create_api_key(spec: ApiKeyIn, request: Request, who: Principal = Depends(key_admin())) -> dict:
    """A key of the caller's org, no broader than the caller's (scopes and filters: 403
    otherwise); the secret (`key`) is shown only in this reply."""
    body, secret = _catalog(request).create_api_key(who.org_id, spec, holder=who.key)
    return {**public_key(body), "key": secret}


@router.get("/api-keys")
def list_api_keys(request: Request, who: Principal = Depends(principal)) -> dict:
    """The org's keys no broader than the caller's (all of them for an unfiltered admin)."""
    who.require("admin")
    return {"items": [public_key(k) for k in _catalog(request).api_keys(who.org_id, holder=who.key)]}


@router.delete("/api-keys/{key_id}", status_code=204, responses=errors(404))
def revoke_api_key(key_id: str, request: Request, who: Principal = Depends(key_admin())) -> Response:
    """Revoke a key no broader than the caller's (403 otherwise) at once in this edge; every
    other service within its view's lag (seconds). The platform-admin key is no org key: 404."""
    _catalog(request).revoke_api_key(who.org_id, key_id, holder=who.key)
    return Response(status_code=204)
