"""The rulebook for a harbor's tall points (seed 003): `{time, ship_id, cargo_id, value}`,
one (an object) or many (an array), to frame batches of ordinary readings.

A pure function like processors.normalize: the envelope and one catalog lookup
in, an Outcome out. Ships and cargos resolve through the harbor: their ids are
derived from (org, harbor, ship or cargo id) (catalog.harbors), so a point needs
two dict lookups and no type version. In a harbor with autoProvision an unknown
ship or cargo is created (a thing, a Double metric): the Outcome lists it and
the processor writes it before the readings. Otherwise the request is refused,
naming the id. A request is judged whole: one bad point refuses it all.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Callable

import orjson

from catalog.brief import brief
from catalog.coercion import CoercionError, coerce
from catalog.harbors import KIND, cargo_metric, cargo_metric_id, ship_thing, ship_thing_id
from catalog.models import NAME_MAX
from processors.columns import Readings
from processors.normalize import MAX_FUTURE_MS
from processors.outcome import Outcome, Rejection, make_verdict, rejected

Lookup = Callable[[str, str, str], "dict | None"]  # (kind, id, org id) -> entity body
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MAX_VERDICT_CARGOS = 1000  # cargo names a verdict lists (a batch may carry many more)


def points(envelope: dict, lookup: Lookup) -> Outcome:
    """Validate and normalize one harbor request; never raises for bad input."""
    now = int(time.time() * 1000)
    received = 0
    org_id, harbor_id = envelope["org_id"], envelope.get("stream") or ""
    try:
        document = _parse(envelope["body"])
        single = isinstance(document, dict)
        items = [document] if single else document
        received = len(items)
        harbor = lookup("place", harbor_id, org_id)
        if harbor is None or harbor.get("kind") != KIND:
            raise Rejection(404, "HARBOR_NOT_FOUND", f"harbor {brief(harbor_id)} not found", field="harbor_id")
        columns, provisions, cargos = _normalize(items, single, org_id, harbor_id,
                                                 bool(harbor.get("autoProvision")), lookup, envelope, now)
    except Rejection as rejection:
        return rejected(envelope, rejection, received, now)
    batches = [{"request_id": envelope["request_id"], "org_id": org_id, "thing_id": thing_id,
                "type_version_id": "", "version": envelope["received_at"], "frames": len(readings["ts"]),
                "readings": readings, "locations": []} for thing_id, readings in columns.items()]
    verdict = make_verdict(envelope, "ingested", 200, received, received, cargos[:MAX_VERDICT_CARGOS], [], now)
    return Outcome(batches, verdict, catalog=provisions)


def _parse(raw: bytes) -> dict | list:
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Rejection(400, "INVALID_PAYLOAD", f"body is not valid JSON: {exc}", field="body") from None
    if not (isinstance(document, dict) or (isinstance(document, list) and document)):
        raise Rejection(400, "INVALID_PAYLOAD", "body must be a point or a non-empty array of points", field="body")
    return document


def _normalize(items: list, single: bool, org_id: str, harbor_id: str, auto: bool, lookup: Lookup,
               envelope: dict, now: int) -> tuple[dict[str, Readings], list, list[str]]:
    """(readings columns by ship thing id, catalog entities to provision, cargo names written)."""
    readings_by_thing: dict[str, Readings] = {}
    things: dict[str, str] = {}  # ship id -> thing id, known or provisioned in this request
    metrics: dict[str, str] = {}  # cargo id -> metric id, likewise
    provisions: list[dict] = []  # catalog entities, as Outcome.catalog holds them
    latest_allowed = now + MAX_FUTURE_MS
    for index, point in enumerate(items):
        try:
            if not isinstance(point, dict):
                raise _Bad("INVALID_PAYLOAD", "a point must be an object", "")
            ts = _time(point.get("time"), latest_allowed)
            ship = _id(point.get("ship_id"), "ship_id")
            cargo = _id(point.get("cargo_id"), "cargo_id")
            try:
                value = coerce("Double", point.get("value"))[0]
            except CoercionError as exc:
                raise _Bad("INVALID_VALUE", f"value {brief(point.get('value'))} of point {index}: {exc}",
                            "value") from None
        except _Bad as bad:
            raise Rejection(400, bad.code, bad.message, _field(single, index, bad.name)) from None
        thing_id = things.get(ship)
        if thing_id is None:
            thing_id = things[ship] = ship_thing_id(org_id, harbor_id, ship)
            if lookup("thing", thing_id, org_id) is None:
                if not auto:
                    raise Rejection(400, "UNKNOWN_SHIP", f"ship {brief(ship)} is not registered in harbor "
                                    f"{harbor_id}, which does not auto-provision", _field(single, index, "ship_id"))
                provisions.append({"kind": "thing", "id": thing_id, "org_id": org_id,
                                   "body": ship_thing(org_id, harbor_id, ship, envelope["received_at"])})
        metric_id = metrics.get(cargo)
        if metric_id is None:
            metric_id = metrics[cargo] = cargo_metric_id(org_id, harbor_id, cargo)
            if lookup("metric", metric_id, org_id) is None:
                if not auto:
                    raise Rejection(400, "UNKNOWN_CARGO", f"cargo {brief(cargo)} is not registered in harbor "
                                    f"{harbor_id}, which does not auto-provision", _field(single, index, "cargo_id"))
                provisions.append({"kind": "metric", "id": metric_id, "org_id": org_id,
                                   "body": cargo_metric(org_id, harbor_id, cargo, envelope["received_at"])})
        readings = readings_by_thing.get(thing_id)
        if readings is None:
            readings = readings_by_thing[thing_id] = Readings()
        readings.metric(metric_id, "Double").add(ts, value)
    return readings_by_thing, provisions, list(metrics)


class _Bad(Exception):
    """A point breaks a rule; the caller names the field (built only on error)."""

    def __init__(self, code: str, message: str, name: str):
        super().__init__(message)
        self.code, self.message, self.name = code, message, name


def _field(single: bool, index: int, name: str) -> str:
    """The offending field: `time` in a single point, `[3].time` in a batch (`[3]` for the point)."""
    if single:
        return name or "body"
    return f"[{index}].{name}" if name else f"[{index}]"


def _time(raw: object, latest_allowed: int) -> int:
    """An ISO 8601 time as epoch ms UTC (without an offset it is taken as UTC)."""
    if not isinstance(raw, str):
        raise _Bad("INVALID_TIMESTAMP", f"time must be an ISO 8601 string, got {brief(raw)}", "time")
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise _Bad("INVALID_TIMESTAMP", f"time {brief(raw)} is not an ISO 8601 date-time", "time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    ts = (parsed - EPOCH) // _MS
    if not 0 <= ts <= latest_allowed:
        raise _Bad("INVALID_TIMESTAMP", f"time {brief(raw)} is before 1970 or in the far future", "time")
    return ts


def _id(raw: object, name: str) -> str:
    if not isinstance(raw, str) or not 0 < len(raw) <= NAME_MAX:
        raise _Bad("INVALID_PAYLOAD", f"{name} must be a string of 1–{NAME_MAX} characters, got {brief(raw)}", name)
    return raw


_MS = datetime.resolution * 1000  # one millisecond
