"""Read API over time: a thing's history and aggregates, and the latest value of a
metric for every thing of a site or fleet (the "Querying data" intent of seed 001).

Times in and out are epoch milliseconds (ISO 8601 is accepted in); ranges are [from, to).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from catalog.models import Aggregation
from catalog.store import cursor_at, position
from producers.api.paging import PageCursor, PageLimit
from producers.edge.auth import Principal, principal, thing_for
from producers.edge.errors import ApiError, not_found
from producers.openapi import errors
from warehouse import series

router = APIRouter(prefix="/v2", tags=["read"])

MAX_MS = 7_258_118_400_000  # 2200-01-01: DateTime64(3)'s range ends in 2299
MAX_BUCKETS = 10_000  # per metric and request
_INTERVAL = re.compile(r"^([1-9][0-9]{0,3})([smhd])$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}

Time = Annotated[str | None, Query(max_length=40, description="epoch milliseconds or ISO 8601 (UTC if no offset)")]
Metrics = Annotated[str | None, Query(max_length=4000, description="comma-separated metric names (or ids)")]
# At least one name: something besides commas and spaces.
SomeMetrics = Annotated[str, Query(max_length=4000, pattern=r"[^\s,]",
                                   description="comma-separated metric names (or ids), at least one")]
Interval = Annotated[str, Query(pattern=_INTERVAL.pattern,
                                description="bucket width: 1m, 5m, 15m, 1h, 6h, 1d (rollup-served), or "
                                            "any N s|m|h|d (up to 9999); buckets are epoch-aligned, days in UTC")]


def _ms(value: str | None, field: str, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        if value.lstrip("-").isdigit():
            ms = int(value)
        else:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.timezone.utc)
            ms = int(parsed.timestamp() * 1000)
    except (ValueError, OverflowError):
        raise ApiError(400, "INVALID_PAYLOAD", f"{field}: epoch milliseconds or ISO 8601", field=field) from None
    if not 0 <= ms <= MAX_MS:
        raise ApiError(400, "INVALID_PAYLOAD", f"{field}: out of range (1970–2200)", field=field)
    return ms


def _range(from_: str | None, to: str | None, default_span: int | None, step: int = 1) -> tuple[int, int]:
    """[from, to) in epoch ms; `to` defaults to now rounded up to `step`, `from` to `default_span`
    before `to` (or 1970)."""
    now = int(time.time() * 1000) + 1
    end = _ms(to, "to", -(-now // step) * step)
    start = _ms(from_, "from", 0 if default_span is None else max(0, end - default_span))
    if start >= end:
        raise ApiError(400, "INVALID_PAYLOAD", "from must be before to", field="from")
    return start, end


def _metrics(request: Request, org_id: str, names: str | None, field: str = "metrics") -> dict[str, dict]:
    """metric id -> its catalog body, for comma-separated names or ids; 404 for an unknown one."""
    view = request.app.state.catalog.view
    found: dict[str, dict] = {}
    for name in filter(None, (n.strip() for n in (names or "").split(","))):
        metric_id = view.metric_id_by_name(org_id, name) or name
        body = view.get("metric", metric_id, org_id)
        if body is None:
            raise not_found("metric", name, field=field)
        found[metric_id] = body
    return found


@router.get("/things/{thing_id}/history", responses=errors(400, 404, 503))
async def get_history(thing_id: str, request: Request, who: Principal = Depends(principal),
                      metrics: Metrics = None, from_: Annotated[Time, Query(alias="from")] = None, to: Time = None,
                      order: Literal["asc", "desc"] = "asc", limit: PageLimit = 1000,
                      cursor: PageCursor = None) -> dict:
    """The thing's readings in [from, to) (default: all of them), each (metric, timestamp) once
    (re-sends and replays deduplicated, the latest correction winning), ordered by timestamp
    then metric id. Pages follow `nextCursor`; rows arriving meanwhile never shift a page."""
    thing_for(request, who, thing_id, "read")
    chosen = _metrics(request, who.org_id, metrics)
    start, end = _range(from_, to, None)
    after = None
    if cursor:  # a position (timestamp, metric id) in the page's order; one past the range is past it
        ts, metric_id = position(cursor)
        after = (min(ts, MAX_MS + 1), metric_id)
    rows = await run_in_threadpool(series.history, request.app.state.warehouse, who.org_id, thing_id, list(chosen),
                                   start, end, descending=order == "desc", limit=limit + 1, after=after)
    more, rows = len(rows) > limit, rows[:limit]
    view = request.app.state.catalog.view
    names = {m: (view.get("metric", m) or {}).get("name", m) for m in {r["metric_id"] for r in rows}}
    return {
        "thingId": thing_id,
        "items": [{"timestamp": r["ts"], "metric": names[r["metric_id"]], "metricId": r["metric_id"],
                   "value": r["value"], "dataType": r["data_type"]} for r in rows],
        "nextCursor": cursor_at(rows[-1]["ts"], rows[-1]["metric_id"]) if more else None,
    }


@router.get("/things/{thing_id}/aggregates", responses=errors(400, 404, 503))
async def get_aggregates(thing_id: str, request: Request, interval: Interval, metrics: SomeMetrics,
                         who: Principal = Depends(principal),
                         from_: Annotated[Time, Query(alias="from")] = None, to: Time = None,
                         aggregation: Aggregation | None = None,
                         source: Annotated[Literal["auto", "raw"], Query(
                             description="auto: rollups when they can answer; raw: always raw readings")] = "auto",
                         ) -> dict:
    """Per metric, one value per bucket with readings: the metric's defaultAggregation (or
    `aggregation`) of its deduplicated readings. `source` in the reply says what answered:
    `rollup_1m` / `rollup_1h` when the interval is a multiple of a rollup and from/to lie on
    its boundaries, else `raw`; both give the same numbers. Default range: the 100 buckets up to now."""
    thing_for(request, who, thing_id, "read")
    match = _INTERVAL.match(interval)
    if match is None:  # the pattern above already refuses it; this keeps the types honest
        raise ApiError(400, "INVALID_PAYLOAD", "interval: N s|m|h|d", field="interval")
    step = int(match.group(1)) * _UNIT_MS[match.group(2)]
    chosen = _metrics(request, who.org_id, metrics)
    if not chosen:
        raise ApiError(400, "INVALID_PAYLOAD", "metrics: name at least one metric", field="metrics")
    start, end = _range(from_, to, 100 * step, step)
    if (end - start) // step > MAX_BUCKETS:
        raise ApiError(400, "INVALID_PAYLOAD", f"more than {MAX_BUCKETS} buckets: widen the interval or "
                                                  f"narrow the range", field="interval")
    how = {}
    for metric_id, body in chosen.items():
        how[metric_id] = (aggregation.value if aggregation else body.get("defaultAggregation")) or "Last"
        if body.get("dataType") == "String" and how[metric_id] != "Count":
            raise ApiError(400, "INVALID_PAYLOAD", f"metric {body['name']!r} holds text: only Count applies",
                           field="aggregation")
    used, buckets = await run_in_threadpool(series.aggregates, request.app.state.warehouse, who.org_id, thing_id,
                                            how, start, end, step, source=source)
    return {
        "thingId": thing_id, "from": start, "to": end, "interval": interval, "source": used,
        "series": [{"metric": body["name"], "metricId": metric_id, "aggregation": how[metric_id],
                    "dataType": body.get("dataType"), "unit": body.get("unitLabel"),
                    "buckets": [{"timestamp": b["ts"], "value": _typed(body, how[metric_id], b["value"]),
                                 "count": b["count"]} for b in buckets[metric_id]]}
                   for metric_id, body in chosen.items()],
    }


def _typed(metric: dict, aggregation: str, value: float | int) -> float | int | bool:
    """Last/Min/Max/Sum of a Long stay whole numbers; Last of a Boolean stays a boolean."""
    if aggregation in ("Count", "Avg"):
        return value
    if metric.get("dataType") == "Long" and float(value).is_integer():
        return int(value)
    if metric.get("dataType") == "Boolean" and aggregation in ("Last", "Min", "Max"):
        return bool(value)
    return value


def _place_latest(kind: str, plural: str) -> None:
    @router.get(f"/{plural}/{{place_id}}/latest", name=f"latest_in_{kind}", responses=errors(400, 404, 503))
    async def latest_in_place(place_id: str, request: Request,
                              metric: Annotated[str, Query(max_length=200, pattern=r"[^\s,]",
                                                           description="the metric's name (or id)")],
                              who: Principal = Depends(principal)) -> dict:
        """The latest value (by event time) of one metric for every thing of the place the key
        may read; things without a reading of it have null timestamp and value."""
        who.require("read")
        catalog = request.app.state.catalog
        things = [t for t in catalog.things_in(who.org_id, place_id, kind) if who.may_use_thing(t)]
        if not things and not who.may_use_place(place_id):
            who.require_place(place_id)
        chosen = _metrics(request, who.org_id, metric.replace(",", " "), "metric")  # one name, commas and all
        if not chosen:
            raise ApiError(400, "INVALID_PAYLOAD", "metric: name one metric", field="metric")
        ((metric_id, body),) = chosen.items()
        latest = await run_in_threadpool(series.latest_of_metric, request.app.state.warehouse, who.org_id,
                                         [t["id"] for t in things], metric_id)
        return {
            "placeId": place_id, "metric": body["name"], "metricId": metric_id, "unit": body.get("unitLabel"),
            "items": [{"thingId": t["id"], "name": t.get("thingName") or t.get("name"),
                       "timestamp": latest.get(t["id"], {}).get("ts"),
                       "value": latest.get(t["id"], {}).get("value")} for t in things],
        }


_place_latest("site", "sites")
_place_latest("fleet", "fleets")
