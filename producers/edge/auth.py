"""API key authentication and authorization.

The key comes as `X-Api-Key` or `Authorization: Bearer`; the org is derived
from it, never from the body. Scopes: read (GETs), write (ingest and catalog
changes; implies read), admin (keys; implies write). Resource filters limit a
key to some places, things and streams: outside them is 403, another org's object 404.

The platform-admin key is not an org key: it is the one secret whose SHA-256
matches the edge's settings (SLUICE_ADMIN_KEY, or SLUICE_ADMIN_KEY_SHA256 alone),
and it acts in the default org. Only the operator's configuration grants it.

Every control-plane write route declares what it writes by taking its caller from
one of the write guards below (`org_wide`, `in_place`, `on_thing`, `key_admin`,
`platform_admin`, `signed`) instead of `principal`; the app refuses to start with a write
route that declares nothing (`undeclared_writes`), so a new route cannot forget it.
Org-wide catalog objects are written only by keys without filters; a filtered key
writes only inside what its filters name. Ingest routes (the dialects) write data,
not catalog objects, and check the key's filters against their target themselves.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.routing import APIRoute

from catalog import keys
from catalog.access import DEFAULT_ORG
from producers.edge.errors import ApiError, not_found

# What the platform-admin key is as a caller; its id names it in envelopes and rate limits.
PLATFORM_KEY = {"id": "key_platform", "name": "platform admin", "scopes": ["admin", keys.PLATFORM_ADMIN],
                "filters": {}}


@dataclass(frozen=True)
class Principal:
    org_id: str
    key: dict

    def require(self, scope: str) -> None:
        """Raise 403 unless the key grants `scope`."""
        if not keys.allows(self.key, scope):
            raise ApiError(403, "FORBIDDEN", f"this key lacks the {scope!r} scope")

    def require_platform_admin(self) -> None:
        if keys.PLATFORM_ADMIN not in self.key.get("scopes", ()):
            raise ApiError(403, "FORBIDDEN", "this needs the platform-admin key")

    @property
    def filtered(self) -> bool:
        """Whether resource filters restrict this key at all."""
        return keys.reach(self.key) is not None

    def may_use_place(self, place_id: str) -> bool:
        reach = keys.reach(self.key)
        return reach is None or place_id in reach[0]

    def may_use_thing(self, thing: dict) -> bool:
        return keys.may_use_thing(self.key, thing)

    def may_use_stream(self, stream: str) -> bool:
        reach = keys.reach(self.key)
        return reach is None or stream in reach[2]

    def require_place(self, place_id: str) -> None:
        if not self.may_use_place(place_id):
            raise ApiError(403, "FORBIDDEN", f"this key's filters do not cover place {place_id!r}")

    def require_thing(self, thing: dict) -> None:
        if not self.may_use_thing(thing):
            raise ApiError(403, "FORBIDDEN", f"this key's filters do not cover thing {thing['id']!r}")

    def require_unfiltered(self, what: str) -> None:
        """Raise 403 if resource filters restrict this key: `what` (plural) is org-wide."""
        if self.filtered:
            raise ApiError(403, "FORBIDDEN", f"{what} are org-wide: only keys without filters write them, and this "
                           f"key's filters ({_named(self.key)}) limit it to what they name",
                           filters=sorted(f for f, v in (self.key.get("filters") or {}).items() if v))


async def principal(request: Request) -> Principal:
    """FastAPI dependency: the caller's key, or 401. Async: it only hashes and looks up
    a dict, so it must not cost a thread-pool hop on every request."""
    secret = request.headers.get("x-api-key") or ""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" else ""
    if secret and bearer and secret != bearer:
        # Which of two keys names the caller would be a guess; RFC 6750 forbids sending two.
        raise ApiError(401, "UNAUTHORIZED", "X-Api-Key and Authorization: Bearer carry different keys")
    secret = secret or bearer
    if not secret:
        raise ApiError(401, "UNAUTHORIZED", "missing API key (X-Api-Key or Authorization: Bearer)")
    return holder(request.app.state, secret)


def holder(state: object, secret: str) -> Principal:
    """The caller holding key `secret`, found with the edge app's `state` (its platform-admin
    key's hash, its catalog), or 401."""
    expected = state.platform_key_hash  # type: ignore[attr-defined]
    if expected and hmac.compare_digest(keys.hash_secret(secret), expected):
        return Principal(DEFAULT_ORG, PLATFORM_KEY)
    found = state.catalog.authenticate(secret)  # type: ignore[attr-defined]
    if found is None:
        raise ApiError(401, "UNAUTHORIZED", "invalid or revoked API key")
    return Principal(*found)


def thing_for(request: Request, who: Principal, thing_id: str, scope: str) -> dict:
    """The caller's thing after the scope and filter checks: 403 or 404 otherwise."""
    who.require(scope)
    thing = request.app.state.catalog.view.get("thing", thing_id, who.org_id)
    if thing is None:
        raise ApiError(404, "THING_NOT_FOUND", f"thing {thing_id!r} not found")
    who.require_thing(thing)
    return thing


# ----- write guards: what a control-plane write route writes, checked before it runs


def org_wide(what: str, scope: str = "write") -> Callable:
    """The caller of a route writing an org-wide catalog object (`what`, plural: metric
    definitions, thing types, templates, ...): a key with `scope` and no filters, else 403."""
    async def writer(who: Principal = Depends(principal)) -> Principal:
        who.require(scope)
        who.require_unfiltered(what)
        return who
    return _guard(writer, "org-wide")


def in_place(param: str, scope: str = "write") -> Callable:
    """The caller of a route writing inside the place named by path parameter `param` (things,
    ships, cargos): a key with `scope` whose filters name the place (or none). 404 for a
    place the org does not have, 403 for one outside the filters."""
    async def writer(request: Request, who: Principal = Depends(principal)) -> Principal:
        who.require(scope)
        place_id = request.path_params[param]
        if not who.may_use_place(place_id):
            if request.app.state.catalog.view.get("place", place_id, who.org_id) is None:
                raise not_found("place", place_id)
            who.require_place(place_id)
        return who
    return _guard(writer, "place")


def on_thing(param: str = "thing_id", scope: str = "write") -> Callable:
    """The caller of a route writing the thing named by path parameter `param`: a key with
    `scope` whose filters reach the thing (or none); 404 or 403 otherwise."""
    async def writer(request: Request, who: Principal = Depends(principal)) -> Principal:
        thing_for(request, who, request.path_params[param], scope)
        return who
    return _guard(writer, "thing")


def key_admin() -> Callable:
    """The caller of a route writing API keys: an admin key, filtered or not; which keys it
    may create or revoke is bounded by the "no broader than itself" rule (catalog.access)."""
    async def writer(who: Principal = Depends(principal)) -> Principal:
        who.require("admin")
        return who
    return _guard(writer, "keys")


def platform_admin() -> Callable:
    """The caller of a platform operation (orgs, SQL across orgs): the platform-admin key only."""
    async def writer(who: Principal = Depends(principal)) -> Principal:
        who.require_platform_admin()
        return who
    return _guard(writer, "platform")


def org_reader() -> Callable:
    """The caller of a POST that only reads the org's data (org-scoped SQL): a key with the
    read scope and no filters; a filtered key gets 403 naming its filters."""
    async def reader(who: Principal = Depends(principal)) -> Principal:
        require_sql_reader(who)
        return who
    return _guard(reader, "nothing (reads)")


def require_sql_reader(who: Principal) -> None:
    """Raise 403 unless `who` may run org-scoped SQL: the read scope, and no filters."""
    who.require("read")
    if who.filtered:
        raise ApiError(403, "FORBIDDEN", "SQL reads the org's tables whole, and this key's filters "
                       f"({_named(who.key)}) limit it to what they name: use a key without filters",
                       filters=sorted(f for f, v in (who.key.get("filters") or {}).items() if v))


def signed(verify: Callable) -> Callable:
    """The caller of a route authenticated by a signature over its body instead of a key (an
    integration's webhook): `await verify(request)` returns the Principal it acts as, or raises 401."""
    async def writer(request: Request) -> Principal:
        return await verify(request)
    return _guard(writer, "signed")


WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def undeclared_writes(routes: Iterable[object]) -> list[str]:
    """Each write route among `routes` (the control plane's) that takes its caller from no
    write guard, as "METHOD path": the app refuses to start with any."""
    missing = []
    for route in routes:
        if not isinstance(route, APIRoute):
            continue
        for method in sorted(route.methods & WRITE_METHODS):
            if not any(hasattr(d.call, "writes") for d in route.dependant.dependencies):
                missing.append(f"{method} {route.path}")
    return missing


def _guard(writer: Callable, writes: str) -> Callable:
    writer.writes = writes  # type: ignore[attr-defined]  # what undeclared_writes looks for
    return writer


def _named(key: dict, shown: int = 3) -> str:
    """The key's filters in a few words, e.g. "placeIds ['site_1']"."""
    parts = []
    for name, values in (key.get("filters") or {}).items():
        if values:
            more = f" and {len(values) - shown} more" if len(values) > shown else ""
            parts.append(f"{name} {values[:shown]!r}{more}")
    return ", ".join(parts)
