"""API key authentication and authorization.

The key comes as `X-Api-Key` or `Authorization: Bearer`; the org is derived
from it, never from the body. Scopes: read (GETs), write (ingest and catalog
changes; implies read), admin (keys; implies write). Resource filters limit a
key to some places and things: outside them is 403, another org's object 404.

The platform-admin key is not an org key: it is the one secret whose SHA-256
matches the edge's settings (SLUICE_ADMIN_KEY, or SLUICE_ADMIN_KEY_SHA256 alone),
and it acts in the default org. Only the operator's configuration grants it.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Request

from catalog import keys
from catalog.access import DEFAULT_ORG
from catalog.errors import SluiceError

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
            raise SluiceError(403, "FORBIDDEN", f"this key lacks the {scope!r} scope")

    def require_platform_admin(self) -> None:
        if keys.PLATFORM_ADMIN not in self.key.get("scopes", ()):
            raise SluiceError(403, "FORBIDDEN", "this needs the platform-admin key")

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
            raise SluiceError(403, "FORBIDDEN", f"this key's filters do not cover place {place_id!r}")

    def require_thing(self, thing: dict) -> None:
        if not self.may_use_thing(thing):
            raise SluiceError(403, "FORBIDDEN", f"this key's filters do not cover thing {thing['id']!r}")


async def principal(request: Request) -> Principal:
    """FastAPI dependency: the caller's key, or 401. Async: it only hashes and looks up
    a dict, so it must not cost a thread-pool hop on every request."""
    secret = request.headers.get("x-api-key")
    if not secret:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        secret = token.strip() if scheme.lower() == "bearer" else ""
    if not secret:
        raise SluiceError(401, "UNAUTHORIZED", "missing API key (X-Api-Key or Authorization: Bearer)")
    expected = request.app.state.platform_key_hash
    if expected and hmac.compare_digest(keys.hash_secret(secret), expected):
        return Principal(DEFAULT_ORG, PLATFORM_KEY)
    found = request.app.state.catalog.authenticate(secret)
    if found is None:
        raise SluiceError(401, "UNAUTHORIZED", "invalid or revoked API key")
    return Principal(*found)


def thing_for(request: Request, who: Principal, thing_id: str, scope: str) -> dict:
    """The caller's thing after the scope and filter checks: 403 or 404 otherwise."""
    who.require(scope)
    thing = request.app.state.catalog.view.get("thing", thing_id, who.org_id)
    if thing is None:
        raise SluiceError(404, "THING_NOT_FOUND", f"thing {thing_id!r} not found")
    who.require_thing(thing)
    return thing
