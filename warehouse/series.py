"""Read queries over time: a thing's history, its aggregates per bucket, and the latest
value of a metric across many things.

Every function takes a Warehouse, blocks on its queries and raises WarehouseError
if one fails. Times are epoch milliseconds, ranges half-open [from, to).
Readings are deduplicated the documented way (the largest version per
(thing, metric, ts)), so re-sends and replays never show twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from warehouse.backend import Warehouse
from warehouse.queries import typed_value
from warehouse.rollups import GRAINS, Grain

AGGREGATIONS = ("Last", "Avg", "Sum", "Min", "Max", "Count")

# ----- history: keyset pagination on (ts, metric_id)

_HISTORY = """
SELECT metric_id, toUnixTimestamp64Milli(ts) AS ms, data_type, value, value_long, value_string
FROM (
    SELECT metric_id, ts, data_type, value, value_long, value_string
    FROM readings
    WHERE org_id = {org_id:String} AND thing_id = {thing_id:String}
      AND (empty({metrics:Array(String)}) OR metric_id IN {metrics:Array(String)})
      AND ts >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC') AND ts < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
      AND (ts, metric_id) %(op)s (fromUnixTimestamp64Milli({after_ms:Int64}, 'UTC'), {after_metric:String})
    ORDER BY version DESC
    LIMIT 1 BY metric_id, ts
)
ORDER BY ts %(dir)s, metric_id %(dir)s
LIMIT {limit:UInt32}
"""
_HISTORY_ASC = _HISTORY % {"op": ">", "dir": "ASC"}
_HISTORY_DESC = _HISTORY % {"op": "<", "dir": "DESC"}


def history(wh: Warehouse, org_id: str, thing_id: str, metric_ids: Sequence[str], from_ms: int, to_ms: int,
            *, descending: bool = False, limit: int = 1000,
            after: tuple[int, str] | None = None) -> list[dict[str, Any]]:
    """A thing's readings in [from_ms, to_ms), one per (metric, ts), ordered by (ts, metric_id)
    (both descending when `descending`), at most `limit`, only those strictly after the
    (ts, metric_id) `after` in that order. Empty `metric_ids` means every metric.

    Keyset pagination: pass the last row's (ts, metric_id) as `after` for the next page;
    rows inserted meanwhile before the cursor never shift a page. Each dict: metric_id,
    ts (epoch ms), data_type, value (typed as latest_event's).
    """
    if after is None:
        after = (from_ms - 1, "") if not descending else (to_ms, "")
    sql = _HISTORY_DESC if descending else _HISTORY_ASC
    params = {"org_id": org_id, "thing_id": thing_id, "metrics": list(metric_ids), "from_ms": from_ms,
              "to_ms": to_ms, "after_ms": after[0], "after_metric": after[1], "limit": limit}
    return [{"metric_id": m, "ts": ts, "data_type": t, "value": typed_value(t, v, vl, vs)}
            for m, ts, t, v, vl, vs in wh.query(sql, params).rows]


# ----- aggregates: from a rollup when it can answer exactly, else from raw readings

_RAW_BUCKETS = """
SELECT metric_id, intDiv(toUnixTimestamp64Milli(ts), {step:Int64}) * {step:Int64} AS b,
    count() AS n, sum(value) AS s, min(value) AS lo, max(value) AS hi, argMax(value, ts) AS last
FROM (
    SELECT metric_id, ts, value
    FROM readings
    WHERE org_id = {org_id:String} AND thing_id = {thing_id:String} AND metric_id IN {metrics:Array(String)}
      AND ts >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC') AND ts < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
    ORDER BY version DESC
    LIMIT 1 BY metric_id, ts
)
GROUP BY metric_id, b
ORDER BY metric_id, b
"""

# Per grain bucket first (its count against its distinct event times), then per interval.
_ROLLUP_BUCKETS = """
SELECT metric_id, intDiv(toInt64(toUnixTimestamp(bucket)) * 1000, {step:Int64}) * {step:Int64} AS b,
    sum(g_n) AS n, sum(g_sum) AS s, min(g_min) AS lo, max(g_max) AS hi, argMax(g_last, bucket) AS last,
    sum(g_n) != sum(g_distinct) AS dirty
FROM (
    SELECT metric_id, bucket, sum(n) AS g_n, sum(sum_value) AS g_sum, min(min_value) AS g_min,
        max(max_value) AS g_max, argMaxMerge(last_value) AS g_last, groupBitmapMerge(event_times) AS g_distinct
    FROM %(table)s
    WHERE org_id = {org_id:String} AND thing_id = {thing_id:String} AND metric_id IN {metrics:Array(String)}
      AND bucket >= toDateTime(intDiv({from_ms:Int64}, 1000), 'UTC')
      AND bucket < toDateTime(intDiv({to_ms:Int64}, 1000), 'UTC')
    GROUP BY metric_id, bucket
)
GROUP BY metric_id, b
ORDER BY metric_id, b
"""


def rollup_for(step_ms: int, from_ms: int, to_ms: int) -> Grain | None:
    """The coarsest rollup that answers buckets of `step_ms` over [from_ms, to_ms) exactly:
    the step a multiple of its grain, and both ends on its bucket boundaries. None: raw."""
    for grain in sorted(GRAINS, key=lambda g: -g.step_ms):
        if step_ms % grain.step_ms == 0 and from_ms % grain.step_ms == 0 and to_ms % grain.step_ms == 0:
            return grain
    return None


def aggregates(wh: Warehouse, org_id: str, thing_id: str, metrics: dict[str, str], from_ms: int, to_ms: int,
               step_ms: int, *, source: str = "auto") -> tuple[str, dict[str, list[dict[str, Any]]]]:
    """Buckets of `step_ms` (epoch-aligned; 1 d = a UTC day) over [from_ms, to_ms) for each
    metric id in `metrics` (metric id -> aggregation, one of AGGREGATIONS); buckets without
    readings are left out.

    Returns (source, {metric_id: [{"ts": bucket start ms, "value": ..., "count": n}]}), where
    source names what answered: "rollup_1m" / "rollup_1h", or "raw". `source="raw"` forces
    raw readings, "auto" uses a rollup when rollup_for() finds one. A rollup bucket that
    saw a re-sent or replayed reading (count above its distinct event times) is answered
    from deduplicated raw readings, so both sources give the same numbers.
    """
    params = {"org_id": org_id, "thing_id": thing_id, "metrics": sorted(metrics), "from_ms": from_ms,
              "to_ms": to_ms, "step": step_ms}
    grain = rollup_for(step_ms, from_ms, to_ms) if source == "auto" else None
    if grain is None:
        rows = wh.query(_RAW_BUCKETS, params).rows
        name = "raw"
    else:
        rows = wh.query(_ROLLUP_BUCKETS % {"table": grain.table}, params).rows
        name = f"rollup_{grain.table.rsplit('_', 1)[1]}"
        dirty = [(m, b) for m, b, *_, is_dirty in rows if is_dirty]
        if dirty:
            rows = _mend(wh, rows, dirty, params)
    out: dict[str, list[dict[str, Any]]] = {m: [] for m in metrics}
    for metric_id, bucket, n, s, lo, hi, last, *_ in rows:
        out[metric_id].append({"ts": bucket, "value": _pick(metrics[metric_id], n, s, lo, hi, last), "count": n})
    return name, out


def _mend(wh: Warehouse, rows: list[tuple], dirty: list[tuple[str, int]], params: dict) -> list[tuple]:
    """Replace the dirty buckets of `rows` by the same buckets computed from raw readings."""
    step = params["step"]
    raw_params = {**params, "metrics": sorted({m for m, _ in dirty}),
                  "from_ms": max(params["from_ms"], min(b for _, b in dirty)),
                  "to_ms": min(params["to_ms"], max(b for _, b in dirty) + step)}
    wanted = set(dirty)
    raw = {(r[0], r[1]): r for r in wh.query(_RAW_BUCKETS, raw_params).rows if (r[0], r[1]) in wanted}
    return [raw.get((r[0], r[1]), r) for r in rows]


def _pick(aggregation: str, n: int, s: float, lo: float, hi: float, last: float) -> float | int:
    if aggregation == "Count":
        return n
    if aggregation == "Sum":
        return s
    if aggregation == "Avg":
        return s / n
    if aggregation == "Min":
        return lo
    if aggregation == "Max":
        return hi
    return last


# ----- the latest value of one metric for many things

_LATEST_OF_METRIC = """
SELECT thing_id, toUnixTimestamp64Milli(latest.1) AS ts, latest.2 AS data_type, latest.3 AS value,
    latest.4 AS value_long, latest.5 AS value_string
FROM (
    SELECT thing_id, argMax((ts, data_type, value, value_long, value_string), (ts, version)) AS latest
    FROM readings
    WHERE org_id = {org_id:String} AND thing_id IN {things:Array(String)} AND metric_id = {metric_id:String}
    GROUP BY thing_id
)
ORDER BY thing_id
"""


def latest_of_metric(wh: Warehouse, org_id: str, thing_ids: Sequence[str], metric_id: str) -> dict[str, dict]:
    """thing_id -> {"ts", "data_type", "value"}: the latest reading of `metric_id` by event time
    for each of `thing_ids` that has one (as latest_event: a backfill never wins)."""
    if not thing_ids:
        return {}
    params = {"org_id": org_id, "things": list(thing_ids), "metric_id": metric_id}
    return {thing: {"ts": ts, "data_type": t, "value": typed_value(t, v, vl, vs)}
            for thing, ts, t, v, vl, vs in wh.query(_LATEST_OF_METRIC, params).rows}
