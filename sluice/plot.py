"""`sluice plot THING METRIC --from --to`: a metric's history drawn to a PNG.

Queries through the same read-only path as `sluice sql` (the edge's admin SQL
endpoint in embedded mode, else the warehouse), so it needs nothing `sluice sql`
does not. At most MAX_POINTS points are drawn: a longer range is bucketed
(average as the line, min–max as the band), by ClickHouse, not in Python.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

from config import Settings
from sluice.sql import QueryRefused, rows
from warehouse.literals import quote_string

MAX_POINTS = 2000


class PlotError(Exception):
    """Nothing to draw: an unknown or ambiguous thing or metric, or an empty range."""


def parse_time(text: str) -> int:
    """Epoch ms from digits (already epoch ms) or ISO 8601 (naive = UTC); ValueError else."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return int(moment.timestamp() * 1000)


def _one(settings: Settings, query: str, what: str, name: str) -> list:
    with rows(settings, query) as (_, found):
        matches = list(found)
    if not matches:
        raise PlotError(f"no {what} named or with id {name!r}")
    if len(matches) > 1:
        raise PlotError(f"{len(matches)} {what}s are named {name!r}; give the id instead")
    return matches[0]


def series(settings: Settings, thing: str, metric: str, since_ms: int, until_ms: int) -> dict:
    """The points to draw: {thing, metric, unit, bucket_ms, ms, avg, min, max}; raises
    PlotError, QueryRefused."""
    db = settings.database
    t, m = quote_string(thing), quote_string(metric)
    org, thing_id, thing_name = _one(settings, f"""
        SELECT org_id, thing_id, argMax(name, updated_at) FROM {db}.things
        WHERE thing_id = {t} OR name = {t} GROUP BY org_id, thing_id HAVING argMax(deleted, updated_at) = 0""",
        "thing", thing)
    metric_id, metric_name, unit = _one(settings, f"""
        SELECT metric_id, argMax(name, updated_at), argMax(unit_label, updated_at) FROM {db}.metric_definitions
        WHERE org_id = {quote_string(org)} AND (metric_id = {m} OR name = {m})
        GROUP BY metric_id HAVING argMax(deleted, updated_at) = 0""", "metric", metric)
    bucket = max(1, -(-(until_ms - since_ms) // MAX_POINTS))
    query = f"""
        SELECT intDiv(toUnixTimestamp64Milli(ts), {bucket}) * {bucket} AS ms,
               avg(value) AS avg, min(value) AS min, max(value) AS max
        FROM (SELECT ts, argMax(value, version) AS value FROM {db}.readings
              WHERE org_id = {quote_string(org)} AND thing_id = {quote_string(thing_id)}
                AND metric_id = {quote_string(metric_id)}
                AND ts >= fromUnixTimestamp64Milli({since_ms}) AND ts < fromUnixTimestamp64Milli({until_ms})
              GROUP BY ts)
        GROUP BY ms ORDER BY ms"""
    with rows(settings, query) as (_, found):
        points = list(found)
    if not points:
        raise PlotError(f"{metric_name} of {thing_name} has no readings in that range")
    ms, avg, low, high = (list(column) for column in zip(*points))
    return {"thing": thing_name, "metric": metric_name, "unit": unit, "bucket_ms": bucket,
            "ms": ms, "avg": avg, "min": low, "max": high}


def render(points: dict, out: Path) -> None:
    """Draw `points` (from series()) to a PNG at `out`."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    times = [dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc) for ms in points["ms"]]
    figure, axes = plt.subplots(figsize=(8, 3.6), dpi=100)
    try:
        if points["bucket_ms"] > 1 and points["min"] != points["max"]:
            axes.fill_between(times, points["min"], points["max"], alpha=0.2, linewidth=0,
                              label="min–max per bucket")
        axes.plot(times, points["avg"], marker="o" if len(times) <= 60 else None, markersize=3, linewidth=1.4)
        unit = f" ({points['unit']})" if points["unit"] else ""
        axes.set_ylabel(f"{points['metric']}{unit}")
        axes.set_title(f"{points['thing']} — {points['metric']}", fontsize=11)
        axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(axes.xaxis.get_major_locator()))
        axes.set_xlabel("UTC")
        axes.grid(True, alpha=0.3)
        figure.tight_layout()
        figure.savefig(out, format="png")
    finally:
        plt.close(figure)


def run_plot(settings: Settings, thing: str, metric: str, since: str, until: str, out: str | None) -> int:
    """`sluice plot`: 0 with the PNG written, 1 if nothing could be drawn, 2 for bad times."""
    try:
        since_ms, until_ms = parse_time(since), parse_time(until)
    except ValueError:
        print("sluice plot: --from and --to take ISO 8601 times or epoch ms", file=sys.stderr)
        return 2
    if until_ms <= since_ms:
        print("sluice plot: --to must be after --from", file=sys.stderr)
        return 2
    try:
        points = series(settings, thing, metric, since_ms, until_ms)
    except (PlotError, QueryRefused) as exc:
        print(f"sluice plot: {exc}", file=sys.stderr)
        return 1
    path = Path(out or f"{thing}-{metric}.png".replace("/", "_").replace(" ", "_"))
    render(points, path)
    print(f"{path}: {len(points['ms'])} points of {points['metric']} for {points['thing']}")
    return 0
