"""Catalog operations: the rules for creating metrics, thing types, places, things,
orgs and keys. Each checks against the view, then writes through the writer.

Blocking: every write waits for Kafka and the view (see CatalogWriter.put).
"""

from __future__ import annotations

import time

from catalog import keys
from catalog.errors import SluiceError, not_found
from catalog.ids import new_id
from catalog.models import MetricDefinitionIn, PlaceIn, ThingIn, ThingPatch, ThingTypeIn
from catalog.properties import check_properties
from catalog.view import CatalogView
from catalog.writer import CatalogWriter


def _now_ms() -> int:
    return int(time.time() * 1000)


class Catalog:
    def __init__(self, view: CatalogView, writer: CatalogWriter) -> None:
        self.view = view
        self.writer = writer

    # ----- orgs and keys

    def ensure_org(self, org_id: str, name: str) -> dict:
        existing = self.view.get("org", org_id)
        if existing is not None:
            return existing
        body = {"id": org_id, "name": name, "createdAt": _now_ms()}
        return self.writer.put("org", org_id, org_id, body)

    def create_api_key(
        self, org_id: str, name: str, scopes: list[str], secret: str | None = None, filters: dict | None = None
    ) -> tuple[dict, str]:
        """Create a key; returns (stored body, secret). The secret is not stored."""
        secret = secret or keys.new_secret()
        key_id = new_id("api_key")
        body = {
            "id": key_id,
            "name": name,
            "scopes": scopes,
            "filters": filters or {},
            "hash": keys.hash_secret(secret),
            "prefix": secret[:8],
            "revoked": False,
            "createdAt": _now_ms(),
        }
        self.writer.put("api_key", key_id, org_id, body)
        return body, secret

    def authenticate(self, secret: str) -> tuple[str, dict] | None:
        """(org id, key body) for a live key, else None."""
        key = self.view.api_key_by_hash(keys.hash_secret(secret))
        if key is None or key.get("revoked"):
            return None
        return self.view.org_of("api_key", key["id"]) or "", key

    # ----- metrics

    def create_metric(self, org_id: str, spec: MetricDefinitionIn) -> dict:
        if self.view.metric_id_by_name(org_id, spec.name) is not None:
            raise SluiceError(409, "CONFLICT", f"a metric named {spec.name!r} already exists", field="name")
        if spec.enumValues is not None and spec.dataType.value != "String":
            raise SluiceError(400, "INVALID_PAYLOAD", "enumValues require dataType String", field="enumValues")
        metric_id = new_id("metric")
        body = {"id": metric_id, **spec.model_dump(mode="json"), "createdAt": _now_ms()}
        return self.writer.put("metric", metric_id, org_id, body)

    def metric(self, org_id: str, metric_id: str) -> dict:
        body = self.view.get("metric", metric_id, org_id)
        if body is None:
            raise not_found("metric", metric_id)
        return body

    # ----- thing types

    def create_thing_type(self, org_id: str, spec: ThingTypeIn) -> dict:
        for index, metric_id in enumerate(spec.metricIds):
            if self.view.get("metric", metric_id, org_id) is None:
                raise SluiceError(
                    400, "INVALID_PAYLOAD", f"metric {metric_id!r} does not exist", field=f"metricIds[{index}]"
                )
        type_id, version_id = new_id("thing_type"), new_id("thing_type_version")
        version = {
            "id": version_id,
            "thingTypeId": type_id,
            "displayName": spec.displayName,
            "description": spec.description,
            "version": 1,
            "metricIds": spec.metricIds,
            "propertyDefinitions": [p.model_dump(mode="json") for p in spec.propertyDefinitions],
            "createdAt": _now_ms(),
        }
        self.writer.put("thing_type_version", version_id, org_id, version)
        body = {
            "id": type_id,
            "displayName": spec.displayName,
            "description": spec.description,
            "latestVersionId": version_id,
            "versionIds": [version_id],
            "createdAt": _now_ms(),
        }
        self.writer.put("thing_type", type_id, org_id, body)
        return {**body, "versionId": version_id, "metricIds": spec.metricIds,
                "propertyDefinitions": version["propertyDefinitions"]}

    # ----- places

    def create_place(self, org_id: str, kind: str, spec: PlaceIn) -> dict:
        place_id = new_id(kind)
        body = {"id": place_id, "kind": kind, **spec.model_dump(mode="json"), "createdAt": _now_ms()}
        return self.writer.put("place", place_id, org_id, body)

    def place(self, org_id: str, place_id: str, kind: str | None = None) -> dict:
        body = self.view.get("place", place_id, org_id)
        if body is None or (kind is not None and body["kind"] != kind):
            raise not_found(kind or "place", place_id)
        return body

    # ----- things

    def _bind_type(self, org_id: str, type_id: str | None, properties: dict) -> str | None:
        """The type version a thing of `type_id` gets (the latest), after checking its properties."""
        if type_id is None:
            if properties:
                raise SluiceError(400, "INVALID_PAYLOAD", "properties need a thingTypeId", field="properties")
            return None
        thing_type = self.view.get("thing_type", type_id, org_id)
        if thing_type is None:
            raise SluiceError(400, "INVALID_PAYLOAD", f"thing type {type_id!r} does not exist", field="thingTypeId")
        version_id = thing_type["latestVersionId"]
        version = self.view.get("thing_type_version", version_id, org_id) or {}
        check_properties(properties, version.get("propertyDefinitions", []))
        return version_id

    def create_thing(self, org_id: str, place_id: str, place_kind: str, spec: ThingIn) -> dict:
        self.place(org_id, place_id, place_kind)
        version_id = self._bind_type(org_id, spec.thingTypeId, spec.properties)
        thing_id = new_id("thing")
        body = {
            "id": thing_id,
            **spec.model_dump(mode="json"),
            "placeId": place_id,
            "thingTypeVersionId": version_id,
            "createdAt": _now_ms(),
        }
        return self.writer.put("thing", thing_id, org_id, body)

    def update_thing(self, org_id: str, thing_id: str, patch: ThingPatch) -> dict:
        """Apply a partial update. Setting thingTypeId binds the type's latest version
        (readings already stored keep the ids they were written with)."""
        current = self.thing(org_id, thing_id)
        changes = patch.model_dump(mode="json", exclude_unset=True)
        body = {**current, **changes, "updatedAt": _now_ms()}
        if "thingTypeId" in changes or "properties" in changes:
            if changes.get("thingTypeId", current.get("thingTypeId")) == current.get("thingTypeId"):
                # Same type: keep the bound version, check properties against it.
                version = self.view.get("thing_type_version", current.get("thingTypeVersionId") or "", org_id) or {}
                check_properties(body.get("properties") or {}, version.get("propertyDefinitions", []))
            else:
                body["thingTypeVersionId"] = self._bind_type(org_id, body["thingTypeId"], body.get("properties") or {})
        return self.writer.put("thing", thing_id, org_id, body)

    def thing(self, org_id: str, thing_id: str) -> dict:
        body = self.view.get("thing", thing_id, org_id)
        if body is None:
            raise not_found("thing", thing_id)
        return body
