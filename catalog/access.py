"""Orgs and API keys: who may call, in which org, on which resources.

Keys are shown once at creation and stored hashed; revoking one rewrites its
record, and every service's view drops its hash as soon as it applies it.
"""

from __future__ import annotations

from catalog import keys
from catalog.errors import SluiceError, not_found
from catalog.ids import new_id
from catalog.models import ApiKeyIn, OrgIn
from catalog.store import Store, now_ms


class Access(Store):
    def ensure_org(self, org_id: str, name: str) -> dict:
        existing = self.view.get("org", org_id)
        if existing is not None:
            return existing
        return self.writer.put("org", org_id, org_id, {"id": org_id, "name": name, "createdAt": now_ms()})

    def create_org(self, spec: OrgIn) -> tuple[dict, dict, str]:
        """A new tenant with its first admin key: (org, key body, secret)."""
        org_id = new_id("org")
        org = self.writer.put("org", org_id, org_id, {"id": org_id, "name": spec.name, "createdAt": now_ms()})
        key, secret = self.create_api_key(org_id, ApiKeyIn(name=f"{spec.name} admin", scopes=["admin"]))
        return org, key, secret

    def org(self, org_id: str) -> dict:
        body = self.view.get("org", org_id)
        if body is None:
            raise not_found("org", org_id)
        return body

    def create_api_key(self, org_id: str, spec: ApiKeyIn, secret: str | None = None,
                       platform_admin: bool = False) -> tuple[dict, str]:
        """Create a key; returns (stored body, secret). Only the secret's hash is stored.

        A platform-admin key (only `sluice up`'s bootstrap key) may also create orgs.
        """
        for place_id in spec.filters.placeIds:
            if self.view.get("place", place_id, org_id) is None:
                raise SluiceError(400, "INVALID_PAYLOAD", f"place {place_id!r} does not exist",
                                  field="filters.placeIds")
        for thing_id in spec.filters.thingIds:
            if self.view.get("thing", thing_id, org_id) is None:
                raise SluiceError(400, "INVALID_PAYLOAD", f"thing {thing_id!r} does not exist",
                                  field="filters.thingIds")
        secret = secret or keys.new_secret()
        key_id = new_id("api_key")
        body = {
            "id": key_id,
            "name": spec.name,
            "scopes": [*spec.scopes, keys.PLATFORM_ADMIN] if platform_admin else spec.scopes,
            "filters": spec.filters.model_dump(mode="json"),
            "hash": keys.hash_secret(secret),
            "prefix": secret[:8],
            "revoked": False,
            "createdAt": now_ms(),
        }
        self.writer.put("api_key", key_id, org_id, body)
        return body, secret

    def api_keys(self, org_id: str) -> list[dict]:
        return sorted(self.view.list("api_key", org_id), key=lambda k: (k["createdAt"], k["id"]))

    def revoke_api_key(self, org_id: str, key_id: str) -> dict:
        body = self.view.get("api_key", key_id, org_id)
        if body is None:
            raise not_found("api key", key_id)
        return self.writer.put("api_key", key_id, org_id, {**body, "revoked": True, "revokedAt": now_ms()})

    def authenticate(self, secret: str) -> tuple[str, dict] | None:
        """(org id, key body) for a live key, else None."""
        key = self.view.api_key_by_hash(keys.hash_secret(secret))
        if key is None or key.get("revoked"):
            return None
        return self.view.org_of("api_key", key["id"]) or "", key


def public_key(body: dict) -> dict:
    """A key as the API shows it: never the hash."""
    return {k: v for k, v in body.items() if k != "hash"}
