"""Catalog presets: standard metric sets an org installs with one call.

`iso15143-3` is the ISO 15143-3 (AEMP 2.0) machine insights: cumulative
operating and idle hours, fuel, DEF, odometer, engine status, load factor,
speed, loads, payload, PTO hours, fault codes. Installing it creates, in the
caller's org, one metric definition per insight and the thing type
"ISO 15143-3 machine" that references them all.

Ids are derived from (org, preset, insight name), not drawn at random, so:
- installing twice changes nothing: the second run finds every id and writes
  nothing (no new metric, no new type version);
- two edges installing at once write the same catalog keys, and the compacted
  topic keeps one entity of each;
- the asset rulebook (processors/assets.py) resolves an insight name to its
  metric id with one derivation and one lookup, whatever the asset's type.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from catalog.errors import Conflict, NotFound
from catalog.ids import derived_id, new_id
from catalog.store import Store, now_ms


@dataclass(frozen=True)
class Insight:
    name: str  # the ISO 15143-3 element name (resolved case-insensitively)
    data_type: str
    aggregation: str
    unit: str | None
    description: str


@dataclass(frozen=True)
class Preset:
    name: str
    standard: str
    type_name: str
    type_description: str
    insights: tuple[Insight, ...]

    def insight(self, name: str) -> Insight | None:
        """The insight called `name` (any case), or None."""
        return _BY_LOWER_NAME[self.name].get(name.lower())


ISO_15143_3 = Preset(
    name="iso15143-3",
    standard="ISO 15143-3 (AEMP 2.0)",
    type_name="ISO 15143-3 machine",
    type_description="A mobile machine reporting the ISO 15143-3 (AEMP 2.0) machine insights",
    insights=(
        Insight("CumulativeOperatingHours", "Double", "Max", "h", "Operating hours since new (the hour meter)"),
        Insight("CumulativeIdleHours", "Double", "Max", "h", "Hours idle: engine running, machine not working"),
        Insight("CumulativeIdleNonOperatingHours", "Double", "Max", "h",
                "Hours with the engine running and no operator input"),
        Insight("CumulativeProductiveHours", "Double", "Max", "h", "Hours the machine was productive"),
        Insight("FuelUsed", "Double", "Max", "L", "Fuel consumed since new"),
        Insight("FuelUsedLast24", "Double", "Last", "L", "Fuel consumed in the last 24 hours"),
        Insight("FuelRemaining", "Double", "Last", "%", "Fuel remaining, percent of tank capacity"),
        Insight("DEFRemaining", "Double", "Last", "%", "Diesel exhaust fluid remaining, percent of tank capacity"),
        Insight("Odometer", "Double", "Max", "km", "Distance travelled since new"),
        Insight("EngineRunning", "Boolean", "Last", None, "Whether the engine is running (EngineStatus)"),
        Insight("AverageLoadFactorLast24", "Double", "Avg", "%",
                "Average engine load over the last 24 hours, percent of rated output"),
        Insight("PeakDailySpeed", "Double", "Max", "km/h", "Highest speed of the day"),
        Insight("CumulativeLoadCount", "Long", "Max", "loads", "Loads performed since new"),
        Insight("CumulativePayloadTotals", "Double", "Max", "t", "Payload moved since new"),
        Insight("CumulativePowerTakeOffHours", "Double", "Max", "h", "Hours the power take-off was engaged"),
        Insight("CumulativeActiveRegenerationHours", "Double", "Max", "h",
                "Hours spent actively regenerating the diesel particulate filter"),
        Insight("FaultCode", "String", "Count", None,
                "A fault (caution) code reported by the machine, e.g. an SPN/FMI pair"),
    ),
)

PRESETS = {ISO_15143_3.name: ISO_15143_3}
_BY_LOWER_NAME = {p.name: {i.name.lower(): i for i in p.insights} for p in PRESETS.values()}


def insight_metric_id(org_id: str, preset: str, name: str) -> str:
    """The metric id of a preset's insight in an org (its canonical name, not the client's spelling)."""
    return derived_id("metric", org_id, "preset", preset, name)


def preset_type_id(org_id: str, preset: str) -> str:
    return derived_id("thing_type", org_id, "preset", preset)


def _version_id(org_id: str, preset: str, metric_ids: list[str]) -> str:
    # Derived from the contract: the same metric list is the same version, so a re-run adds none.
    fingerprint = hashlib.sha256("\0".join(metric_ids).encode()).hexdigest()
    return derived_id("thing_type_version", org_id, "preset", preset, fingerprint)


def preset_or_404(name: str) -> Preset:
    preset = PRESETS.get(name)
    if preset is None:
        raise NotFound(f"no preset named {name[:64]!r}; known: {sorted(PRESETS)}",
                       field="preset")
    return preset


class Presets(Store):
    def install_preset(self, org_id: str, name: str) -> tuple[dict, bool]:
        """Create the preset's metrics and thing type in `org_id` where missing.

        Returns (summary, whether anything was written). 409 when a metric of the org
        already uses an insight's name (metric names are unique per org). Blocks on
        catalog writes like every catalog operation.
        """
        preset = preset_or_404(name)
        ids = [insight_metric_id(org_id, preset.name, i.name) for i in preset.insights]
        taken = [i.name for i, metric_id in zip(preset.insights, ids)
                 if (owner := self.view.metric_id_by_name(org_id, i.name)) is not None and owner != metric_id]
        if taken:
            raise Conflict(f"metrics named {taken} already exist in this org and are not "
                           f"the preset's; rename them to install {preset.name}", field="name", names=taken)
        created = []
        for insight, metric_id in zip(preset.insights, ids):
            if self.view.get("metric", metric_id, org_id) is None:
                self.writer.put("metric", metric_id, org_id, {
                    "id": metric_id, "name": insight.name, "dataType": insight.data_type,
                    "defaultAggregation": insight.aggregation, "displayName": None,
                    "description": insight.description, "unitLabel": insight.unit, "enumValues": None,
                    "preset": preset.name, "createdAt": now_ms()})
                created.append(insight.name)
        type_id = preset_type_id(org_id, preset.name)
        current = self.view.get("thing_type", type_id, org_id)
        if current is None:
            version_id = self._preset_version(org_id, preset, type_id, _version_id(org_id, preset.name, ids), 1,
                                              ids, [])
            self.writer.put("thing_type", type_id, org_id, {
                "id": type_id, "displayName": preset.type_name, "description": preset.type_description,
                "latestVersionId": version_id, "versionIds": [version_id], "preset": preset.name,
                "createdAt": now_ms()})
            created.append(preset.type_name)
        else:
            # The org may have added its own sensors in later versions: keep them, add only what is missing.
            latest = self.view.get("thing_type_version", current["latestVersionId"], org_id) or {}
            have = latest.get("metricIds", [])
            version_id = current["latestVersionId"]
            if missing := [metric_id for metric_id in ids if metric_id not in have]:
                version_id = self._preset_version(org_id, preset, type_id, new_id("thing_type_version"),
                                                  len(current["versionIds"]) + 1, [*have, *missing],
                                                  latest.get("propertyDefinitions", []))
                self.writer.put("thing_type", type_id, org_id, {
                    **current, "latestVersionId": version_id, "versionIds": [*current["versionIds"], version_id],
                    "updatedAt": now_ms()})
                created.append(f"{preset.type_name} version {len(current['versionIds']) + 1}")
        metrics = [self.view.get("metric", metric_id, org_id) for metric_id in ids]
        return {"preset": preset.name, "standard": preset.standard, "thingTypeId": type_id, "versionId": version_id,
                "created": created,
                "metrics": [{k: m[k] for k in ("id", "name", "dataType", "defaultAggregation", "unitLabel")}
                            for m in metrics]}, bool(created)

    def _preset_version(self, org_id: str, preset: Preset, type_id: str, version_id: str, number: int,
                        metric_ids: list[str], properties: list[dict]) -> str:
        self.writer.put("thing_type_version", version_id, org_id, {
            "id": version_id, "thingTypeId": type_id, "version": number, "displayName": preset.type_name,
            "description": preset.type_description, "metricIds": metric_ids, "propertyDefinitions": properties,
            "createdAt": now_ms()})
        return version_id
