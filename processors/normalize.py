"""The rulebook for `POST /v2/thing/{thingId}/data`: a pure function from one raw
envelope to its normalized frames, its verdict and its dead letters.

No I/O: it reads the catalog through two lookups it is given, so it is tested
alone and reused by the benchmark's plain-Python baseline. Verdicts and dead
letters are built by processors.outcome, like every rulebook's.
"""

from __future__ import annotations

import time
from typing import Callable

import orjson

from catalog.brief import brief
from catalog.coercion import CoercionError, coerce
from catalog.resolution import ResolutionTable, ResolvedMetric
from processors import json_body
from processors.columns import MetricReadings, Readings
from processors.outcome import Outcome, Rejection, make_verdict, rejected

# Event times outside [epoch, now + this] are rejected as clock errors.
MAX_FUTURE_MS = 24 * 3600 * 1000

ThingLookup = Callable[[str, str], "dict | None"]  # (org id, thing id) -> thing body
TableLookup = Callable[[str], "ResolutionTable | None"]  # type version id -> table


def normalize(envelope: dict, thing_lookup: ThingLookup, table_lookup: TableLookup) -> Outcome:
    """Validate and normalize one thing_data request; never raises for bad input."""
    now = int(time.time() * 1000)
    frames_received = 0
    try:
        body = _parse(envelope)
        frames_in = body["frames"]
        frames_received = len(frames_in)
        thing = thing_lookup(envelope["org_id"], envelope["thing_id"] or "")
        if thing is None:
            raise Rejection(404, "THING_NOT_FOUND", f"thing {brief(envelope['thing_id'])} not found")
        version_id = thing.get("thingTypeVersionId")
        table = table_lookup(version_id) if version_id else None
        if table is None:
            raise Rejection(
                424, "TYPE_NOT_INITIALIZED", "the thing has no initialized thing type", field="thingTypeId"
            )
        readings, locations, names = _normalize_frames(frames_in, table, now)
    except Rejection as rejection:
        return rejected(envelope, rejection, frames_received, now)
    batch = {
        "request_id": envelope["request_id"],
        "org_id": envelope["org_id"],
        "thing_id": envelope["thing_id"],
        "type_version_id": version_id,
        "version": envelope["received_at"],
        "frames": frames_received,
        "readings": readings,
        "locations": locations,
    }
    verdict = make_verdict(envelope, "ingested", 200, frames_received, frames_received, names, [], now)
    return Outcome([batch], verdict)


def _parse(envelope: dict) -> dict:
    try:
        body = json_body.document(envelope)
    except orjson.JSONDecodeError as exc:
        raise Rejection(400, "INVALID_PAYLOAD", f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict) or "frames" not in body:
        raise Rejection(400, "INVALID_PAYLOAD", "body must be an object with a 'frames' array", field="frames")
    if not isinstance(body["frames"], list) or not body["frames"]:
        raise Rejection(400, "INVALID_PAYLOAD", "at least one frame is required", field="frames")
    return body


def _normalize_frames(frames_in: list, table: ResolutionTable, now: int) -> tuple[Readings, list[dict], list[str]]:
    """Resolve and coerce every value into readings columns; (readings, locations, names written)."""
    readings = Readings()
    locations: list[dict] = []
    names: dict[str, None] = {}  # insertion-ordered set of canonical names written
    # The request's spellings, resolved once (frames repeat the same names): (readings, resolution).
    by_name: dict[str, tuple[MetricReadings, ResolvedMetric]] = {}
    latest_allowed = now + MAX_FUTURE_MS
    for index, frame in enumerate(frames_in):
        where = f"frames[{index}]"
        if not isinstance(frame, dict):
            raise Rejection(400, "INVALID_PAYLOAD", "a frame must be an object", field=where)
        ts = frame.get("timestamp")
        if isinstance(ts, bool) or not isinstance(ts, int):
            raise Rejection(400, "INVALID_TIMESTAMP", "timestamp must be epoch milliseconds", f"{where}.timestamp")
        if not 0 <= ts <= latest_allowed:
            raise Rejection(400, "INVALID_TIMESTAMP", f"timestamp {ts} is before 1970 or in the far future",
                            f"{where}.timestamp")
        location = _location(frame.get("location"), f"{where}.location")
        if location is not None:
            location["ts"] = ts
            locations.append(location)
        metrics = frame.get("metrics")
        if metrics is None and location is not None:
            continue  # a location-only frame
        if not isinstance(metrics, dict) or not metrics:
            raise Rejection(400, "INVALID_PAYLOAD", "each frame needs at least one metric", f"{where}.metrics")
        for name, raw_value in metrics.items():
            known = by_name.get(name)
            if known is None:
                resolved = table.get(name.lower())
                if resolved is None:
                    raise Rejection(400, "UNKNOWN_METRIC", f"metric {brief(name)} is not defined on the thing's type",
                                    f"{where}.metrics.{name}")
                known = by_name[name] = readings.metric(resolved.metric_id, resolved.data_type), resolved
                names[resolved.name] = None
            metric, resolved = known
            if type(raw_value) is float and metric.data_type == "Double" and raw_value - raw_value == 0.0:
                metric.add(ts, raw_value)  # the common case, what coerce() returns for it
                continue
            try:
                metric.add(ts, *coerce(resolved.data_type, raw_value, resolved.enum_values))
            except CoercionError as exc:
                raise Rejection(400, "INVALID_VALUE",
                                f"metric {brief(name)} in frame {index}: value {brief(raw_value)}: {exc}",
                                f"{where}.metrics.{name}") from None
    return readings, locations, list(names)


def _number(value: object, field: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise Rejection(400, "INVALID_LOCATION", f"{field.rsplit('.', 1)[-1]} must be a number in [{low:g}, {high:g}], "
                        f"got {brief(value)}", field)
    return float(value)


def _location(raw: object, where: str) -> dict | None:
    """A frame's optional location (seed 000: latitude, longitude, accuracy radius), range-checked."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise Rejection(400, "INVALID_LOCATION", "location must be an object", where)
    accuracy = raw.get("accuracyRadius")
    return {
        "latitude": _number(raw.get("latitude"), f"{where}.latitude", -90, 90),
        "longitude": _number(raw.get("longitude"), f"{where}.longitude", -180, 180),
        "accuracy_m": None if accuracy is None else _number(accuracy, f"{where}.accuracyRadius", 0, 1e7),
    }


