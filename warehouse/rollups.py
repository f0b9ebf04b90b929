"""The rollups: 1-minute and 1-hour buckets of `readings`, kept by materialized views.

Per (org, thing, metric, bucket) a rollup row holds what every defaultAggregation
needs: the count, sum, min and max of `value`, the last value by event time
(argMax state), and the set of event times seen (a roaring bitmap of the
millisecond offsets in the bucket).

Why the set of event times: a materialized view sees each inserted block, not the
table, so a client's re-send or a replay of readings already stored is counted
again in count and sum. ReplacingMergeTree collapses them in `readings` (later),
the rollup cannot. The bitmap makes that visible, exactly: a bucket whose count
exceeds its number of distinct event times saw a duplicate, and the read path
answers that bucket from deduplicated raw readings instead (warehouse/series.py).
Clean buckets — nearly all of them — are answered from the rollup.

Pure string building; nothing here blocks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Grain:
    """One rollup level: its table, the bucket width, and its partitioning."""

    table: str
    step_ms: int
    function: str  # ClickHouse's toStartOf… for the bucket
    partition: str
    granularity: int  # rows per index mark: a row carries a bitmap, so fewer than the default 8192


GRAINS: tuple[Grain, ...] = (
    Grain("readings_1m", 60_000, "toStartOfMinute", "toYYYYMM(bucket)", 1024),
    Grain("readings_1h", 3_600_000, "toStartOfHour", "toYear(bucket)", 256),
)


def _table(grain: Grain) -> str:
    # Same key prefix as readings: one thing's metric over a time range is one
    # contiguous range of the key. Monthly (1m) / yearly (1h) partitions keep the
    # number of parts small while letting a range query prune whole partitions. A
    # query reads whole granules, and every row holds a bitmap of up to 60 (1m) or
    # 3,600 (1h, at 1 s) event times: small granules keep one series' read small.
    # The deduplication window lets a replayed batch (same insert token) be dropped
    # here as it is in readings, instead of being counted and detected.
    return f"""(
    org_id LowCardinality(String),
    thing_id String,
    metric_id LowCardinality(String),
    bucket DateTime('UTC'),
    n SimpleAggregateFunction(sum, UInt64),
    sum_value SimpleAggregateFunction(sum, Float64),
    min_value SimpleAggregateFunction(min, Float64),
    max_value SimpleAggregateFunction(max, Float64),
    last_value AggregateFunction(argMax, Float64, DateTime64(3, 'UTC')),
    event_times AggregateFunction(groupBitmap, UInt32)
)
ENGINE = AggregatingMergeTree
PARTITION BY {grain.partition}
ORDER BY (org_id, thing_id, metric_id, bucket)
SETTINGS index_granularity = {grain.granularity}, non_replicated_deduplication_window = 10000"""


def _select(grain: Grain, source: str) -> str:
    """The rollup rows of `source` (the view's body, and the backfill's on readings FINAL)."""
    return f"""SELECT org_id, thing_id, metric_id, {grain.function}(ts) AS bucket,
    count() AS n, sum(value) AS sum_value, min(value) AS min_value, max(value) AS max_value,
    argMaxState(value, ts) AS last_value,
    groupBitmapState(toUInt32(toUnixTimestamp64Milli(ts) - toInt64(toUnixTimestamp(bucket)) * 1000)) AS event_times
FROM {source}
GROUP BY org_id, thing_id, metric_id, bucket"""


def statements(db: str) -> list[str]:
    """Create the rollup tables and their views, then fill them from the readings
    already stored (an upgraded deployment), deduplicated by FINAL. Readings inserted between a view's
    creation and the fill are counted twice: the duplicate check sends their
    buckets to raw readings, so answers stay exact."""
    out = []
    for grain in GRAINS:
        out.append(f"CREATE TABLE IF NOT EXISTS {db}.{grain.table} {_table(grain)}")
        out.append(f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{grain.table}_mv TO {db}.{grain.table} AS\n"
                   + _select(grain, f"{db}.readings"))
        out.append(f"INSERT INTO {db}.{grain.table}\n" + _select(grain, f"{db}.readings FINAL"))
    return out


TABLES: tuple[str, ...] = tuple(name for g in GRAINS for name in (g.table, f"{g.table}_mv"))
