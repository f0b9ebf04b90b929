"""The rulebook for `POST /v2/thing/{thingId}/data`: a pure function from one raw
envelope to its normalized frames, its verdict and its dead letters.

No I/O: it reads the catalog through two lookups it is given, so it is tested
alone and reused by the benchmark's plain-Python baseline.

Whatever a client sends, the verdict and dead letter stay small: error messages
and fields are bounded (`Rejection`), and values are shown through `brief`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import orjson

from catalog.brief import brief, clip
from catalog.coercion import CoercionError, coerce
from catalog.resolution import ResolutionTable

# Event times outside [epoch, now + this] are rejected as clock errors.
MAX_FUTURE_MS = 24 * 3600 * 1000

# Longest error message and field name in a verdict or dead letter (characters).
MAX_MESSAGE_CHARS = 512
MAX_FIELD_CHARS = 160

ThingLookup = Callable[[str, str], "dict | None"]  # (org id, thing id) -> thing body
TableLookup = Callable[[str], "ResolutionTable | None"]  # type version id -> table


@dataclass
class Outcome:
    """What one raw request becomes: at most one frame batch, one verdict, dead letters."""

    frames: dict | None
    verdict: dict | None  # None only for bytes that are not a request at all
    dead_letters: list[dict] = field(default_factory=list)

    @property
    def request_id(self) -> str:
        return self.verdict["request_id"] if self.verdict else self.dead_letters[0]["request_id"]


class Rejection(Exception):
    """Why a request is refused; message and field are cut to a bounded length."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        message = clip(message, MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.field = None if field is None else clip(field, MAX_FIELD_CHARS)


def normalize(envelope: dict, thing_lookup: ThingLookup, table_lookup: TableLookup) -> Outcome:
    """Validate and normalize one thing_data request; never raises for bad input."""
    now = int(time.time() * 1000)
    frames_received = 0
    try:
        body = _parse(envelope["body"])
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
        return _rejected(envelope, rejection, frames_received, now)
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
    verdict = _verdict(envelope, "ingested", 200, frames_received, frames_received, names, [], now)
    return Outcome(batch, verdict)


def _parse(raw: bytes) -> dict:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Rejection(400, "INVALID_PAYLOAD", f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict) or "frames" not in body:
        raise Rejection(400, "INVALID_PAYLOAD", "body must be an object with a 'frames' array", field="frames")
    if not isinstance(body["frames"], list) or not body["frames"]:
        raise Rejection(400, "INVALID_PAYLOAD", "at least one frame is required", field="frames")
    return body


def _normalize_frames(frames_in: list, table: ResolutionTable, now: int) -> tuple[dict, list[dict], list[str]]:
    """Resolve and coerce every value into readings columns; (readings, locations, names written)."""
    ts_col: list[int] = []
    metric_col: list[str] = []
    type_col: list[str] = []
    value_col: list[float] = []
    long_col: list[int] = []
    string_col: list[str] = []
    locations: list[dict] = []
    names: dict[str, None] = {}  # insertion-ordered set of canonical names written
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
            resolved = table.get(name.lower())
            if resolved is None:
                raise Rejection(400, "UNKNOWN_METRIC",
                                f"metric {brief(name)} is not defined on the thing's type", f"{where}.metrics.{name}")
            try:
                number, integer, text = coerce(resolved.data_type, raw_value, resolved.enum_values)
            except CoercionError as exc:
                raise Rejection(400, "INVALID_VALUE",
                                f"metric {brief(name)} in frame {index}: value {brief(raw_value)}: {exc}",
                                f"{where}.metrics.{name}") from None
            ts_col.append(ts)
            metric_col.append(resolved.metric_id)
            type_col.append(resolved.data_type)
            value_col.append(number)
            long_col.append(integer)
            string_col.append(text)
            names[resolved.name] = None
    readings = {"ts": ts_col, "metric_id": metric_col, "data_type": type_col, "value": value_col,
                "value_long": long_col, "value_string": string_col}
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


def failed(envelope: dict, code: str, message: str, status: int = 500) -> Outcome:
    """The verdict and dead letter of a request the processor could not handle
    (INTERNAL_ERROR, TOO_LARGE): its own outcome, so its batch-mates are unaffected."""
    return _rejected(envelope, Rejection(status, code, message), 0, int(time.time() * 1000))


def _rejected(envelope: dict, rejection: Rejection, frames_received: int, now: int) -> Outcome:
    status = {424: "failed_dependency", 500: "failed"}.get(rejection.status, "rejected")
    errors = [{"code": rejection.code, "message": rejection.message, "field": rejection.field}]
    verdict = _verdict(envelope, status, rejection.status, frames_received, 0, [], errors, now)
    dead = {
        "request_id": envelope["request_id"],
        "org_id": envelope["org_id"],
        "key_id": envelope.get("key_id"),
        "route": envelope["route"],
        "thing_id": envelope.get("thing_id"),
        "stream": envelope.get("stream"),
        "template_id": envelope.get("template_id"),
        "received_at": envelope["received_at"],
        "item_index": -1,
        "reason": rejection.code,
        "detail": rejection.message,
        "original": envelope["body"],
        "rejected_at": now,
    }
    return Outcome(None, verdict, [dead])


def _verdict(envelope: dict, status: str, http_status: int, received: int, ingested: int,
             metrics: list[str], errors: list[dict], now: int) -> dict:
    return {
        "request_id": envelope["request_id"],
        "org_id": envelope["org_id"],
        "thing_id": envelope.get("thing_id"),
        "route": envelope["route"],
        "status": status,
        "http_status": http_status,
        "frames_received": received,
        "frames_ingested": ingested,
        "metrics": metrics,
        "errors": errors,
        "duplicate_of": None,
        "received_at": envelope["received_at"],
        "processed_at": now,
    }


def undecodable(payload: bytes, reason: str) -> Outcome:
    """A message on the raw topic that is not a request envelope: dead-letter it whole."""
    now = int(time.time() * 1000)
    dead = {"request_id": "", "org_id": "", "route": "unknown", "received_at": now, "item_index": -1,
            "reason": "UNDECODABLE", "detail": clip(reason, MAX_MESSAGE_CHARS), "original": payload, "rejected_at": now}
    return Outcome(None, None, [dead])
