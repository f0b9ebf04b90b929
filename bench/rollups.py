"""Rollups: aggregates of one thing's metric over its whole range, from the rollups vs from
raw readings, on embedded ClickHouse (chDB).

A child process (`python -m bench.rollups --child FOLDER THINGS`; chDB opens one folder per
process) migrates a fresh warehouse and inserts THINGS × 10 metrics × 10,000 readings a
second apart straight into `readings` with one INSERT … SELECT from numbers() (the
materialized views fill the rollups as the blocks arrive), then times
`warehouse.series.aggregates` for one thing and one metric over the whole range, at 1-minute
and 1-hour intervals, with source "auto" (a rollup answers) and "raw". Each figure is the
median of RUNS queries (after one warm-up), the two sources alternating, in milliseconds. A 10,000-reading series is
small enough that raw readings answer about as fast; so one more series of LONG readings
(one thing, one metric) shows where rollups pay: at 1-hour buckets over ~11.6 days.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import Context, Row, Stat

METRICS, SECONDS = 10, 10_000
LONG = 1_000_000  # readings of the one long series
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
RUNS = 30
TARGET_MS = 50.0
CHILD_TIMEOUT_S = 900


def run(ctx: Context) -> list[Row]:
    things = ctx.scale(100, 10)
    out = subprocess.run([sys.executable, "-m", "bench.rollups", "--child", str(Path(ctx.scratch) / "rollups"),
                          str(things)], capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    if out.returncode != 0:
        raise RuntimeError(f"rollups child failed: {out.stderr[-3000:]}")
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    readings = things * METRICS * SECONDS
    rows = [Row("rollups.load_s", f"rollups: load {readings / 1e6:g} M readings (views on)", "s",
                Stat.of([figures["load_s"]]), note=f"one run; {figures['rows_per_s']:,.0f} rows/s")]
    for interval in ("1m", "1h", "1h long"):
        what = (f"{interval[:2]}, 1 series of {LONG / 1e6:g} M" if interval.endswith("long")
                else f"{interval}, 1 thing × 1 metric ({SECONDS:,})")
        key = f"rollups.{interval.replace(' ', '_')}"
        rows.append(Row(f"{key}.raw", f"aggregates {what}, raw", "ms", Stat.of(figures[f"{interval}.raw"]),
                        lower_is_better=True))
        rows.append(Row(f"{key}.rollup", f"aggregates {what}, {figures[f'{interval}.source']}", "ms",
                        Stat.of(figures[f"{interval}.rollup"]), baseline=f"{key}.raw", target=TARGET_MS,
                        lower_is_better=True))
    return rows


def child(folder: str, things: int) -> dict:
    from warehouse import series
    from warehouse.embedded import ChdbWarehouse

    wh = ChdbWarehouse(Path(folder), "bench_rollups")
    wh.migrate()
    total = things * METRICS * SECONDS
    started = time.perf_counter()
    # Ordered like the table's key (thing, metric, ts), as a sink's batches per thing would be.
    wh.command(f"""INSERT INTO readings (org_id, thing_id, metric_id, ts, data_type, value, type_version_id,
        request_id, version)
    SELECT 'org_bench', concat('thg_', toString(intDiv(number, {METRICS * SECONDS}))),
        concat('mdef_', toString(intDiv(number, {SECONDS}) % {METRICS})),
        fromUnixTimestamp64Milli(toInt64({T0} + (number % {SECONDS}) * 1000), 'UTC'), 'Double',
        (number % 1000) / 8, 'tv', 'req_bench', 1
    FROM numbers({total})
    SETTINGS async_insert = 0""")
    load_s = time.perf_counter() - started
    figures: dict = {"load_s": load_s, "rows_per_s": total / load_s}
    # And one long series, where rollups matter: LONG readings a second apart (~11.6 days).
    wh.command(f"""INSERT INTO readings (org_id, thing_id, metric_id, ts, data_type, value, type_version_id,
        request_id, version)
    SELECT 'org_bench', 'thg_long', 'mdef_0', fromUnixTimestamp64Milli(toInt64({T0} + number * 1000), 'UTC'),
        'Double', (number % 1000) / 8, 'tv', 'req_bench', 1
    FROM numbers({LONG})
    SETTINGS async_insert = 0""")
    hours = -(-LONG // 3600)
    for interval, step, thing, expected, end in (
            ("1m", 60_000, "thg_7", SECONDS, T0 + 3 * 3_600_000),  # the whole 10,000 s, on hour boundaries
            ("1h", 3_600_000, "thg_7", SECONDS, T0 + 3 * 3_600_000),
            ("1h long", 3_600_000, "thg_long", LONG, T0 + hours * 3_600_000)):
        metric = "mdef_0" if thing == "thg_long" else "mdef_3"

        def once(source: str) -> tuple[float, str]:
            began = time.perf_counter()
            used, buckets = series.aggregates(wh, "org_bench", thing, {metric: "Avg"}, T0, end, step,
                                              source=source)
            assert sum(b["count"] for b in buckets[metric]) == expected
            return (time.perf_counter() - began) * 1000, used
        # Alternating, so background merges and other load hit both sources alike.
        once("auto"), once("raw")  # warm-up
        pairs = [(once("auto"), once("raw")) for _ in range(RUNS)]
        figures[f"{interval}.rollup"] = [auto[0] for auto, _ in pairs]
        figures[f"{interval}.raw"] = [raw[0] for _, raw in pairs]
        figures[f"{interval}.source"] = pairs[0][0][1]
        print(f"{interval}: rollup p50 {statistics.median(figures[f'{interval}.rollup']):.1f} ms, "
              f"raw p50 {statistics.median(figures[f'{interval}.raw']):.1f} ms", file=sys.stderr)
    wh.close()
    return figures


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]))))
