"""API key authentication: `X-Api-Key` or `Authorization: Bearer`, org derived from the key."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from catalog import keys
from catalog.errors import SluiceError


@dataclass(frozen=True)
class Principal:
    org_id: str
    key: dict

    def require(self, scope: str) -> None:
        """Raise 403 unless the key grants `scope`."""
        if not keys.allows(self.key, scope):
            raise SluiceError(403, "FORBIDDEN", f"this key lacks the {scope!r} scope")


def principal(request: Request) -> Principal:
    """FastAPI dependency: the caller's key, or 401."""
    secret = request.headers.get("x-api-key")
    if not secret:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        secret = token.strip() if scheme.lower() == "bearer" else ""
    if not secret:
        raise SluiceError(401, "UNAUTHORIZED", "missing API key (X-Api-Key or Authorization: Bearer)")
    found = request.app.state.catalog.authenticate(secret)
    if found is None:
        raise SluiceError(401, "UNAUTHORIZED", "invalid or revoked API key")
    return Principal(*found)
