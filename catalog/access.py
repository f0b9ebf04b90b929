"""Orgs and API keys: who may call, in which org, on which resources.

Keys are shown once at creation and stored hashed; revoking one rewrites its
record, and every service's view drops its hash as soon as it applies it.
A key acts on other keys only when they are no broader than itself
(`keys.broader`). The platform-admin key is not stored here at all: the edge
checks it against its settings (producers.edge.auth), so no catalog write can grant,
revoke or re-create it.
"""

from __future__ import annotations

from catalog import keys
from catalog.errors import Forbidden, not_found
from catalog.ids import new_id
from catalog.models import ApiKeyIn, OrgIn
from catalog.store import Store, now_ms
from catalog.view import CatalogView

DEFAULT_ORG = "org_default"  # where the platform-admin key acts


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
        key, secret = self.create_api_key(org_id, ApiKeyIn(name=f"{spec.name} admin", scopes=["admin"]), holder=None)
        return org, key, secret

    def org(self, org_id: str) -> dict:
        body = self.view.get("org", org_id)
        if body is None:
            raise not_found("org", org_id)
        return body

    def create_api_key(self, org_id: str, spec: ApiKeyIn, holder: dict | None) -> tuple[dict, str]:
        """Create a key no broader than `holder` (None: unbounded, for an org's first key);
        returns (stored body, secret). Only the secret's hash is stored. 403 if broader."""
        for place_id in spec.filters.placeIds:
            if self.view.get("place", place_id, org_id) is None:
                raise not_found("place", place_id, field="filters.placeIds")
        for thing_id in spec.filters.thingIds:
            if self.view.get("thing", thing_id, org_id) is None:
                raise not_found("thing", thing_id, field="filters.thingIds")
        # filters.streams is not checked for existence: it names streams (by name) and data
        # sources (by id or externalId), and may name a data source its key will create.
        filters = spec.filters.model_dump(mode="json")
        self._require_no_broader({"scopes": spec.scopes, "filters": filters}, holder, org_id, "create")
        secret = keys.new_secret()
        key_id = new_id("api_key")
        body = {
            "id": key_id,
            "name": spec.name,
            "scopes": spec.scopes,
            "filters": filters,
            "hash": keys.hash_secret(secret),
            "prefix": secret[:8],
            "revoked": False,
            "createdAt": now_ms(),
        }
        self.writer.put("api_key", key_id, org_id, body)
        return body, secret

    def api_keys(self, org_id: str, holder: dict) -> list[dict]:
        """The org's keys that `holder` may see: those no broader than itself."""
        place_of = self._place_of(org_id)
        return sorted((k for k in self.view.list("api_key", org_id)
                       if _org_key(k) and keys.broader(k, holder, place_of) is None),
                      key=lambda k: (k["createdAt"], k["id"]))

    def revoke_api_key(self, org_id: str, key_id: str, holder: dict) -> dict:
        """Revoke a key no broader than `holder`: 404 if not the org's, 403 if broader."""
        body = self.view.get("api_key", key_id, org_id)
        if body is None or not _org_key(body):
            raise not_found("api key", key_id)
        self._require_no_broader(body, holder, org_id, "revoke")
        return self.writer.put("api_key", key_id, org_id, {**body, "revoked": True, "revokedAt": now_ms()})

    def api_key_for(self, org_id: str, key_id: str, holder: dict, verb: str) -> dict:
        """A key `holder` may act on (no broader than itself): 404 if not the org's, 403 if broader."""
        body = self.view.get("api_key", key_id, org_id)
        if body is None or not _org_key(body):
            raise not_found("api key", key_id)
        self._require_no_broader(body, holder, org_id, verb)
        return body

    def authenticate(self, secret: str) -> tuple[str, dict] | None:
        """(org id, key body) for a live org key, else None."""
        return authenticate(self.view, secret)

    def retire_stored_platform_keys(self) -> int:
        """Revoke platform-admin keys that older versions stored in the catalog; how many.

        They are refused already (`authenticate`); revoking records it for every reader.
        """
        stale = [k for k in self.view.list("api_key", DEFAULT_ORG) if not _org_key(k) and not k.get("revoked")]
        for body in stale:
            self.writer.put("api_key", body["id"], DEFAULT_ORG, {**body, "revoked": True, "revokedAt": now_ms()})
        return len(stale)

    def _place_of(self, org_id: str):
        return lambda thing_id: (self.view.get("thing", thing_id, org_id) or {}).get("placeId")

    def _require_no_broader(self, other: dict, holder: dict | None, org_id: str, verb: str) -> None:
        reason = None if holder is None else keys.broader(other, holder, self._place_of(org_id))
        if reason is not None:
            raise Forbidden(f"this key may not {verb} that key: {reason}")


def authenticate(view: CatalogView, secret: str) -> tuple[str, dict] | None:
    """(org id, key body) for a live org key, else None: one check for the edge's HTTP
    requests and the processor's ingest-topic messages alike."""
    key = view.api_key_by_hash(keys.hash_secret(secret))
    if key is None or key.get("revoked") or not _org_key(key):
        return None
    return view.org_of("api_key", key["id"]) or "", key


def _org_key(body: dict) -> bool:
    """False for a platform-admin key record left by an older version (never honoured)."""
    return keys.PLATFORM_ADMIN not in body.get("scopes", ())


def public_key(body: dict) -> dict:
    """A key as the API shows it: never the hash."""
    return {k: v for k, v in body.items() if k != "hash"}
