"""Harbors (seed 003): datasets of tall points `{time, ship_id, cargo_id, value}`.

A harbor is a place of kind "harbor" (id `hbr_…`): its ships are things registered
in it, so a key's place filter naming the harbor reaches every ship of it, today's
and future ones, as it does for a site. A ship is a thing and a cargo a Double
metric, both scoped to their harbor; their ids are derived from (org, harbor,
ship or cargo id), not drawn at random. So:

- resolving a point needs no name index nor thing-type version: the processor
  derives both ids and looks them up (a new cargo never needs a new type version);
- provisioning is race-free: two processors seeing a new ship at once both write
  the record under the same catalog key, and the compacted topic keeps one entity;
  a replayed request finds it and writes nothing.

Cargo metrics stay out of the org's metric-name index (catalog.view): a cargo
named "temperature" in two harbors is two metrics, and neither takes the name
from the org's own metric definitions.
"""

from __future__ import annotations

from catalog.errors import Conflict, not_found
from catalog.ids import derived_id, new_id
from catalog.models import CargoIn, HarborIn, HarborPatch, ShipIn
from catalog.store import Store, now_ms, ordered

KIND = "harbor"  # the place kind of a harbor


def ship_thing_id(org_id: str, harbor_id: str, ship_id: str) -> str:
    return derived_id("thing", org_id, harbor_id, "ship", ship_id)


def cargo_metric_id(org_id: str, harbor_id: str, cargo_id: str) -> str:
    return derived_id("metric", org_id, harbor_id, "cargo", cargo_id)


def ship_thing(org_id: str, harbor_id: str, ship_id: str, created_at: int, name: str | None = None) -> dict:
    """The thing body of a ship (untyped: its metrics resolve through the harbor)."""
    return {"id": ship_thing_id(org_id, harbor_id, ship_id), "thingName": name or ship_id, "shipId": ship_id,
            "harborId": harbor_id, "placeId": harbor_id, "thingTypeId": None, "thingTypeVersionId": None,
            "properties": {}, "createdAt": created_at}


def cargo_metric(org_id: str, harbor_id: str, cargo_id: str, created_at: int, **descriptive: object) -> dict:
    """The metric body of a cargo: a Double, aggregated by its last value unless told otherwise."""
    return {"id": cargo_metric_id(org_id, harbor_id, cargo_id), "name": cargo_id, "cargoId": cargo_id,
            "harborId": harbor_id, "dataType": "Double", "defaultAggregation": "Last", "displayName": None,
            "description": None, "unitLabel": None, "enumValues": None, **descriptive, "createdAt": created_at}


class Harbors(Store):
    def create_harbor(self, org_id: str, spec: HarborIn) -> dict:
        harbor_id = new_id("harbor")
        body = {"id": harbor_id, "kind": KIND, **spec.model_dump(mode="json"), "createdAt": now_ms()}
        return self.writer.put("place", harbor_id, org_id, body)

    def harbor(self, org_id: str, harbor_id: str) -> dict:
        body = self.view.get("place", harbor_id, org_id)
        if body is None or body.get("kind") != KIND:
            raise not_found("harbor", harbor_id)
        return body

    def harbors(self, org_id: str) -> list[dict]:
        return ordered(p for p in self.view.list("place", org_id) if p.get("kind") == KIND)

    def update_harbor(self, org_id: str, harbor_id: str, patch: HarborPatch) -> dict:
        current = self.harbor(org_id, harbor_id)
        changes = patch.model_dump(mode="json", exclude_unset=True)
        return self.writer.put("place", harbor_id, org_id, {**current, **changes, "updatedAt": now_ms()})

    def register_ship(self, org_id: str, harbor_id: str, spec: ShipIn) -> dict:
        """Register a ship ahead of its data (what a harbor without autoProvision needs); 409 if known."""
        self.harbor(org_id, harbor_id)
        body = ship_thing(org_id, harbor_id, spec.shipId, now_ms(), spec.thingName)
        if self.view.get("thing", body["id"], org_id) is not None:
            raise Conflict(f"ship {spec.shipId!r} is already registered", field="shipId")
        return self.writer.put("thing", body["id"], org_id, body)

    def register_cargo(self, org_id: str, harbor_id: str, spec: CargoIn) -> dict:
        """Register a cargo (a Double metric of the harbor's ships); 409 if known."""
        self.harbor(org_id, harbor_id)
        descriptive = spec.model_dump(mode="json", exclude={"cargoId"}, exclude_none=True)
        body = cargo_metric(org_id, harbor_id, spec.cargoId, now_ms(), **descriptive)
        if self.view.get("metric", body["id"], org_id) is not None:
            raise Conflict(f"cargo {spec.cargoId!r} is already registered", field="cargoId")
        return self.writer.put("metric", body["id"], org_id, body)

    def ships(self, org_id: str, harbor_id: str) -> list[dict]:
        self.harbor(org_id, harbor_id)
        return ordered(t for t in self.view.list("thing", org_id) if t.get("harborId") == harbor_id)

    def cargos(self, org_id: str, harbor_id: str) -> list[dict]:
        self.harbor(org_id, harbor_id)
        return ordered(m for m in self.view.list("metric", org_id) if m.get("harborId") == harbor_id)
