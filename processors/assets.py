"""The rulebooks for asset data (seed 000's Data Ingest API): an asset's machine
insights, locations and advanced sensors, time-stamped, to a frame batch of
ordinary readings and locations (`asset_data`: one asset; `asset_batch`:
`{"assets": [{"assetId", …}]}`, one frame batch per asset).

    {"machineInsights": [{"time", "name", "value"}],       ISO 15143-3 insights, by name
     "locations":       [{"time", "latitude", "longitude", "accuracyRadius"?}],
     "advancedSensors": [{"time", "sensorId", "value"}]}   custom metrics, by metric id

Pure functions like processors.normalize: the envelope and one catalog lookup
in, an Outcome out. An insight name resolves to the metric the org's
`iso15143-3` preset installed (its id is derived from the name, catalog.presets),
whatever the asset's type; a sensor id must be a metric of the asset's type
version ("a sensor that exists for the asset"). Values are coerced like every
reading (catalog.coercion). A request is judged whole: one bad entry refuses it all.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Callable

import orjson

from catalog.brief import brief
from catalog.coercion import CoercionError, coerce
from catalog.presets import ISO_15143_3, insight_metric_id
from processors.columns import Readings
from processors.normalize import MAX_FUTURE_MS, _location
from processors.outcome import Outcome, Rejection, make_verdict, rejected

Lookup = Callable[[str, str, str], "dict | None"]  # (kind, id, org id) -> entity body
SECTIONS = ("machineInsights", "locations", "advancedSensors")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def asset_data(envelope: dict, lookup: Lookup) -> Outcome:
    """Validate and normalize one asset_data request (one asset); never raises for bad input."""
    return _judge(envelope, lookup, batch=False)


def asset_batch(envelope: dict, lookup: Lookup) -> Outcome:
    """Validate and normalize one asset_batch request, `{"assets": [{"assetId", sections…}]}`:
    one frame batch per asset, judged whole; never raises for bad input."""
    return _judge(envelope, lookup, batch=True)


def _judge(envelope: dict, lookup: Lookup, batch: bool) -> Outcome:
    now = int(time.time() * 1000)
    received = 0
    org_id = envelope["org_id"]
    latest_allowed = now + MAX_FUTURE_MS
    names: dict[str, None] = {}  # insertion-ordered set of metric names written
    batches = []
    try:
        document = _parse(envelope["body"], batch)
        if batch:
            assets = [(_asset_id(item, f"assets[{i}]"), item, f"assets[{i}].")
                      for i, item in enumerate(document["assets"])]
        else:
            assets = [(envelope.get("thing_id") or "", document, "")]
        received = sum(len(item.get(section) or ()) for _, item, _ in assets for section in SECTIONS)
        for asset_id, item, prefix in assets:
            asset = lookup("thing", asset_id, org_id)
            if asset is None:
                raise Rejection(404, "ASSET_NOT_FOUND", f"asset {brief(asset_id)} not found",
                                field=f"{prefix}assetId")
            readings = Readings()
            _insights(item.get("machineInsights") or [], org_id, lookup, readings, names, latest_allowed, prefix)
            _sensors(item.get("advancedSensors") or [], org_id, asset_id, _sensor_table(asset, org_id, lookup),
                     lookup, readings, names, latest_allowed, prefix)
            locations = _locations(item.get("locations") or [], latest_allowed, prefix)
            batches.append({"request_id": envelope["request_id"], "org_id": org_id, "thing_id": asset_id,
                            "type_version_id": asset.get("thingTypeVersionId") or "",
                            "version": envelope["received_at"],
                            "frames": sum(len(item.get(section) or ()) for section in SECTIONS),
                            "readings": readings, "locations": locations})
    except Rejection as rejection:
        return rejected(envelope, rejection, received, now)
    verdict = make_verdict(envelope, "ingested", 200, received, received, list(names), [], now)
    return Outcome(batches, verdict)


def _parse(raw: bytes, batch: bool) -> dict:
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Rejection(400, "INVALID_PAYLOAD", f"body is not valid JSON: {exc}", field="body") from None
    if not isinstance(document, dict):
        raise Rejection(400, "INVALID_PAYLOAD", "body must be a JSON object", field="body")
    if not batch:
        _check_sections(document, "")
        return document
    if set(document) != {"assets"} or not isinstance(document["assets"], list) or not document["assets"]:
        raise Rejection(400, "INVALID_PAYLOAD", "body must be {\"assets\": [a non-empty array of assets]}",
                        field="assets")
    for index, item in enumerate(document["assets"]):
        if not isinstance(item, dict):
            raise Rejection(400, "INVALID_PAYLOAD", "an asset's entry must be an object", field=f"assets[{index}]")
        _check_sections({k: v for k, v in item.items() if k != "assetId"}, f"assets[{index}].")
    return document


def _check_sections(document: dict, prefix: str) -> None:
    if unknown := [key for key in document if key not in SECTIONS]:
        raise Rejection(400, "INVALID_PAYLOAD", f"unknown field {brief(unknown[0])}; an asset's data has "
                        f"{', '.join(SECTIONS)}", field=f"{prefix}{unknown[0]}")
    for section in SECTIONS:
        if document.get(section) is not None and not isinstance(document[section], list):
            raise Rejection(400, "INVALID_PAYLOAD", f"{section} must be an array", field=f"{prefix}{section}")
    if not any(document.get(section) for section in SECTIONS):
        raise Rejection(400, "INVALID_PAYLOAD", f"at least one entry is required in {', '.join(SECTIONS)}",
                        field=prefix.rstrip(".") or "body")


def _asset_id(item: dict, where: str) -> str:
    asset_id = item.get("assetId")
    if not isinstance(asset_id, str) or not asset_id:
        raise Rejection(400, "INVALID_PAYLOAD", f"assetId must be a non-empty string, got {brief(asset_id)}",
                        field=f"{where}.assetId")
    return asset_id


def _entry(raw: object, where: str, latest_allowed: int) -> tuple[dict, int]:
    if not isinstance(raw, dict):
        raise Rejection(400, "INVALID_PAYLOAD", "an entry must be an object", field=where)
    return raw, _time(raw.get("time"), f"{where}.time", latest_allowed)


def _time(raw: object, where: str, latest_allowed: int) -> int:
    """An ISO 8601 date-time (UTC without an offset) or epoch milliseconds, as epoch ms."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        ts = raw
    elif isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            raise Rejection(400, "INVALID_TIMESTAMP", f"time {brief(raw)} is not an ISO 8601 date-time",
                            where) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        ts = (parsed - EPOCH) // _MS
    else:
        raise Rejection(400, "INVALID_TIMESTAMP", f"time must be an ISO 8601 string or epoch milliseconds, "
                        f"got {brief(raw)}", where)
    if not 0 <= ts <= latest_allowed:
        raise Rejection(400, "INVALID_TIMESTAMP", f"time {brief(raw)} is before 1970 or in the far future", where)
    return ts


def _append(readings: Readings, ts: int, metric: dict, raw_value: object, where: str) -> None:
    enum = metric.get("enumValues")
    try:
        coerced = coerce(metric["dataType"], raw_value, frozenset(enum) if enum else None)
    except CoercionError as exc:
        raise Rejection(400, "INVALID_VALUE", f"{brief(metric['name'])}: value {brief(raw_value)}: {exc}",
                        f"{where}.value") from None
    readings.metric(metric["id"], metric["dataType"]).add(ts, *coerced)


def _insights(entries: list, org_id: str, lookup: Lookup, readings: Readings, names: dict,
              latest_allowed: int, prefix: str) -> None:
    metrics: dict[str, dict] = {}  # canonical name -> metric body, per request
    for index, raw in enumerate(entries):
        where = f"{prefix}machineInsights[{index}]"
        entry, ts = _entry(raw, where, latest_allowed)
        name = entry.get("name")
        insight = ISO_15143_3.insight(name) if isinstance(name, str) else None
        if insight is None:
            raise Rejection(400, "UNKNOWN_MACHINE_INSIGHT", f"machine insight {brief(name)} is not an "
                            f"{ISO_15143_3.standard} insight Sluice knows", f"{where}.name")
        metric = metrics.get(insight.name)
        if metric is None:
            metric = lookup("metric", insight_metric_id(org_id, ISO_15143_3.name, insight.name), org_id)
            if metric is None:
                raise Rejection(424, "PRESET_NOT_INSTALLED", f"machine insight {insight.name!r} is not installed "
                                f"in this org: install the {ISO_15143_3.name} preset first", f"{where}.name")
            metrics[insight.name] = metric
        _append(readings, ts, metric, entry.get("value"), where)
        names[insight.name] = None


def _sensor_table(asset: dict, org_id: str, lookup: Lookup) -> frozenset[str]:
    """The metric ids of the asset's type version: the sensors that exist for it."""
    version_id = asset.get("thingTypeVersionId")
    version = lookup("thing_type_version", version_id, org_id) if version_id else None
    return frozenset(version["metricIds"]) if version else frozenset()


def _sensors(entries: list, org_id: str, asset_id: str, sensors: frozenset[str], lookup: Lookup,
             readings: Readings, names: dict, latest_allowed: int, prefix: str) -> None:
    found: dict[str, dict] = {}
    for index, raw in enumerate(entries):
        where = f"{prefix}advancedSensors[{index}]"
        entry, ts = _entry(raw, where, latest_allowed)
        sensor_id = entry.get("sensorId")
        metric = found.get(sensor_id) if isinstance(sensor_id, str) else None
        if metric is None:
            metric = lookup("metric", sensor_id, org_id) if isinstance(sensor_id, str) and sensor_id in sensors \
                else None
            if metric is None:
                raise Rejection(400, "UNKNOWN_SENSOR", f"sensor {brief(sensor_id)} does not exist for asset "
                                f"{brief(asset_id)}", f"{where}.sensorId")
            found[sensor_id] = metric
        _append(readings, ts, metric, entry.get("value"), where)
        names[metric["name"]] = None


def _locations(entries: list, latest_allowed: int, prefix: str) -> list[dict]:
    locations = []
    for index, raw in enumerate(entries):
        where = f"{prefix}locations[{index}]"
        entry, ts = _entry(raw, where, latest_allowed)
        location = _location({k: entry.get(k) for k in ("latitude", "longitude", "accuracyRadius")}, where)
        location["ts"] = ts
        locations.append(location)
    return locations


_MS = datetime.resolution * 1000  # one millisecond
