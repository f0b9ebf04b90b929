"""Metric definitions and thing types: the contract a reading is judged by.

Ids are immutable. A metric's name and data type never change (readings were
coerced by them); its descriptive fields may. A thing type evolves by versions:
a new version becomes the type's latest, and things keep the version they were
bound to.
"""

from __future__ import annotations

from catalog.errors import Conflict, Invalid, NotFound, not_found
from catalog.ids import new_id
from catalog.models import MetricDefinitionIn, MetricPatch, ThingTypeIn, ThingTypeVersionIn
from catalog.store import Store, now_ms, ordered


class Definitions(Store):
    # ----- metrics

    def create_metric(self, org_id: str, spec: MetricDefinitionIn) -> dict:
        if self.view.metric_id_by_name(org_id, spec.name) is not None:
            raise Conflict(f"a metric named {spec.name!r} already exists", field="name")
        if spec.enumValues is not None and spec.dataType.value != "String":
            raise Invalid("enumValues require dataType String", field="enumValues")
        metric_id = new_id("metric")
        body = {"id": metric_id, **spec.model_dump(mode="json"), "createdAt": now_ms()}
        return self.writer.put("metric", metric_id, org_id, body)

    def metric(self, org_id: str, metric_id: str) -> dict:
        return self._get("metric", metric_id, org_id)

    def metrics(self, org_id: str) -> list[dict]:
        return ordered(self.view.list("metric", org_id))

    def update_metric(self, org_id: str, metric_id: str, patch: MetricPatch) -> dict:
        """Change descriptive fields; enum values may only grow (stored readings stay valid)."""
        current = self.metric(org_id, metric_id)
        changes = patch.model_dump(mode="json", exclude_unset=True)
        if "enumValues" in changes:
            if current.get("enumValues") is None:
                raise Invalid("only enum-shaped metrics have enumValues",
                              field="enumValues")
            missing = set(current["enumValues"]) - set(changes["enumValues"] or [])
            if missing:
                raise Invalid(f"enum values cannot be removed: {sorted(missing)}",
                              field="enumValues")
        return self.writer.put("metric", metric_id, org_id, {**current, **changes, "updatedAt": now_ms()})

    # ----- thing types and their versions

    def _check_metrics(self, org_id: str, metric_ids: list[str]) -> None:
        for index, metric_id in enumerate(metric_ids):
            if self.view.get("metric", metric_id, org_id) is None:
                raise not_found("metric", metric_id, field=f"metricIds[{index}]")

    def _write_version(self, org_id: str, type_id: str, number: int, display_name: str,
                       description: str | None, spec: ThingTypeIn | ThingTypeVersionIn) -> dict:
        version_id = new_id("thing_type_version")
        version = {
            "id": version_id,
            "thingTypeId": type_id,
            "version": number,
            "displayName": display_name,
            "description": description,
            "metricIds": spec.metricIds,
            "propertyDefinitions": [p.model_dump(mode="json") for p in spec.propertyDefinitions],
            "createdAt": now_ms(),
        }
        return self.writer.put("thing_type_version", version_id, org_id, version)

    def create_thing_type(self, org_id: str, spec: ThingTypeIn) -> dict:
        self._check_metrics(org_id, spec.metricIds)
        type_id = new_id("thing_type")
        # The version is written first: a type never points at a version no view has.
        version = self._write_version(org_id, type_id, 1, spec.displayName, spec.description, spec)
        body = {
            "id": type_id,
            "displayName": spec.displayName,
            "description": spec.description,
            "latestVersionId": version["id"],
            "versionIds": [version["id"]],
            "createdAt": now_ms(),
        }
        self.writer.put("thing_type", type_id, org_id, body)
        return self._with_latest(org_id, body)

    def create_thing_type_version(self, org_id: str, type_id: str, spec: ThingTypeVersionIn) -> dict:
        current = self._get("thing_type", type_id, org_id, "thing type")
        self._check_metrics(org_id, spec.metricIds)
        display_name = spec.displayName or current["displayName"]
        description = spec.description if spec.description is not None else current.get("description")
        version = self._write_version(org_id, type_id, len(current["versionIds"]) + 1, display_name,
                                      description, spec)
        body = {**current, "displayName": display_name, "description": description,
                "latestVersionId": version["id"], "versionIds": [*current["versionIds"], version["id"]],
                "updatedAt": now_ms()}
        self.writer.put("thing_type", type_id, org_id, body)
        return version

    def thing_type(self, org_id: str, type_id: str) -> dict:
        return self._with_latest(org_id, self._get("thing_type", type_id, org_id, "thing type"))

    def thing_types(self, org_id: str) -> list[dict]:
        return [self._with_latest(org_id, t) for t in ordered(self.view.list("thing_type", org_id))]

    def thing_type_version(self, org_id: str, type_id: str, version_id: str) -> dict:
        version = self._get("thing_type_version", version_id, org_id, "thing type version")
        if version["thingTypeId"] != type_id:
            raise NotFound(f"thing type version {version_id!r} not found", id=version_id)
        return version

    def _with_latest(self, org_id: str, thing_type: dict) -> dict:
        """The type as the API shows it: with its latest version's contract inline."""
        latest = self.view.get("thing_type_version", thing_type["latestVersionId"], org_id) or {}
        return {**thing_type, "versionId": thing_type["latestVersionId"], "version": latest.get("version"),
                "metricIds": latest.get("metricIds", []),
                "propertyDefinitions": latest.get("propertyDefinitions", [])}
