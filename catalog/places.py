"""Places (sites, fleets) and the things registered in them.

A thing is bound to its type's latest version when registered (or when its type
changes) and keeps it. Deleting a thing marks it deleted in the catalog: every
view forgets it, and its stored readings stay queryable.
"""

from __future__ import annotations

from pydantic import ValidationError

from catalog.errors import CatalogError, Invalid, NotFound, not_found
from catalog.ids import new_id
from catalog.models import PlaceIn, ThingIn, ThingPatch
from catalog.properties import check_properties
from catalog.store import Store, now_ms, ordered


class Places(Store):
    # ----- places

    def create_place(self, org_id: str, kind: str, spec: PlaceIn) -> dict:
        place_id = new_id(kind)
        body = {"id": place_id, "kind": kind, **spec.model_dump(mode="json"), "createdAt": now_ms()}
        return self.writer.put("place", place_id, org_id, body)

    def place(self, org_id: str, place_id: str, kind: str | None = None) -> dict:
        body = self._get("place", place_id, org_id, kind or "place")
        if kind is not None and body["kind"] != kind:
            raise NotFound(f"{kind} {place_id!r} not found", id=place_id)
        return body

    def places(self, org_id: str, kind: str) -> list[dict]:
        return ordered(p for p in self.view.list("place", org_id) if p["kind"] == kind)

    # ----- things

    def _bind_type(self, org_id: str, type_id: str | None, properties: dict) -> str | None:
        """The version a thing of `type_id` is bound to (the latest), after checking its properties."""
        if type_id is None:
            if properties:
                raise Invalid("properties need a thingTypeId", field="properties")
            return None
        thing_type = self.view.get("thing_type", type_id, org_id)
        if thing_type is None:
            raise not_found("thing type", type_id, field="thingTypeId")
        version_id = thing_type["latestVersionId"]
        version = self.view.get("thing_type_version", version_id, org_id) or {}
        check_properties(properties, version.get("propertyDefinitions", []))
        return version_id

    def create_thing(self, org_id: str, place_id: str, place_kind: str, spec: ThingIn) -> dict:
        self.place(org_id, place_id, place_kind)
        version_id = self._bind_type(org_id, spec.thingTypeId, spec.properties)
        thing_id = new_id("thing")
        body = {"id": thing_id, **spec.model_dump(mode="json"), "placeId": place_id,
                "thingTypeVersionId": version_id, "createdAt": now_ms()}
        return self.writer.put("thing", thing_id, org_id, body)

    def create_things(self, org_id: str, place_id: str, place_kind: str,
                      items: list[object]) -> list[str | CatalogError]:
        """Register many; one outcome per item, in order: the new thing's id, or why it was refused."""
        self.place(org_id, place_id, place_kind)
        outcomes: list[str | CatalogError] = []
        for item in items:
            try:
                outcomes.append(self.create_thing(org_id, place_id, place_kind, ThingIn.model_validate(item))["id"])
            except ValidationError as exc:
                first = exc.errors()[0]
                field = ".".join(str(p) for p in first["loc"])
                outcomes.append(Invalid(f"{field}: {first['msg']}", field=field))
            except CatalogError as exc:
                outcomes.append(exc)
        return outcomes

    def update_thing(self, org_id: str, thing_id: str, patch: ThingPatch) -> dict:
        """Apply a partial update. A new thingTypeId binds that type's latest version
        (readings already stored keep the ids they were written with)."""
        current = self.thing(org_id, thing_id)
        changes = patch.model_dump(mode="json", exclude_unset=True)
        body = {**current, **changes, "updatedAt": now_ms()}
        if changes.get("thingTypeId", current.get("thingTypeId")) != current.get("thingTypeId"):
            body["thingTypeVersionId"] = self._bind_type(org_id, body["thingTypeId"], body.get("properties") or {})
        elif "properties" in changes:
            version = self.view.get("thing_type_version", current.get("thingTypeVersionId") or "", org_id) or {}
            check_properties(body.get("properties") or {}, version.get("propertyDefinitions", []))
        return self.writer.put("thing", thing_id, org_id, body)

    def delete_thing(self, org_id: str, thing_id: str) -> None:
        current = self.thing(org_id, thing_id)
        self.writer.put("thing", thing_id, org_id, {**current, "deleted": True, "deletedAt": now_ms()})

    def thing(self, org_id: str, thing_id: str) -> dict:
        return self._get("thing", thing_id, org_id)

    def things_in(self, org_id: str, place_id: str, kind: str) -> list[dict]:
        self.place(org_id, place_id, kind)
        return ordered(t for t in self.view.list("thing", org_id) if t["placeId"] == place_id)
