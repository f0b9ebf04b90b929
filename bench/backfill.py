"""Backfill: `sluice import` of a Parquet file of historical readings, end to end.

One stack (edge with the embedded sink, processor; rate limit off) and 100 things of
10 Double metrics. Each run writes a wide Parquet file (one row per thing and
timestamp, one column per metric; 1,000 timestamps per thing: 1,000,000 values),
rows shuffled so event time and things are interleaved, in an event-time slot of its
own. The clock runs from the start of the import (fingerprint, read, batch, send:
500,000-value chunks, 4 batches in flight (the default), then 8, then 4 capped at
25,000 values/s with `--max-rate`, once) until every value is
queryable (uniqExact over the slot, polled every 0.25 s through the admin SQL).
Meanwhile a live device sends a 1-value sync request every 100 ms: its p99 reply time
during the import, against the same with no import running, is the cost to live ingest.

Baseline: the same rows, prebuilt as Arrow readings columns before the clock starts,
inserted straight into a readings table of a fresh chDB (`--child direct`, its own
process) in 100,000-row inserts: what a plain bulk insert costs, with no parsing,
HTTP, Kafka or validation. Blocks for about a minute per run at full scale.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from bench import fixtures as fx
from bench.common import Context, Row, Stat
from bench.loadgen import percentile
from bench.stack_setup import METRICS, BenchStack
from config import Settings

THINGS = 100
SLOT_MS = 86_400_000
DIRECT_ROWS_PER_INSERT = 100_000
# (batches in flight, values/s cap): the defaults, twice the concurrency, and a capped import
CONFIGS = ((4, 0.0), (8, 0.0), (4, 25_000.0))
LIVE_EVERY_S = 0.1


def run(ctx: Context) -> list[Row]:
    timestamps = ctx.scale(1000, 100)
    values = THINGS * METRICS * timestamps
    direct: list[float] = []
    figures: dict[tuple[int, float], tuple[list[float], list[float], list[float]]] = {}
    slot = 0
    with BenchStack(ctx, "backfill") as bench:
        fleet = bench.register(things=THINGS)
        idle = _live_latencies(bench, fleet.thing_ids[0], 3.0)
        for config in CONFIGS:
            concurrency, cap = config
            landed, acknowledged, live = figures.setdefault(config, ([], [], []))
            for i in range(ctx.runs if not cap else 1):  # a capped run's rate is known: once is enough
                slot += 1
                base = fx.TS_BASE - slot * SLOT_MS  # a slot of its own per run, in the past
                path = Path(ctx.scratch) / f"backfill-{slot}.parquet"
                write_file(path, fleet.thing_ids, base, timestamps)
                seconds, ack_seconds, requests, latencies = _import(bench, path, base, values, concurrency,
                                                                    cap, fleet.thing_ids[0])
                landed.append(values / seconds)
                acknowledged.append(values / ack_seconds)
                live.append(percentile(latencies, 99))
                line = (f"backfill run {i + 1}, {_label(config)}: {landed[-1]:,.0f} values/s landed "
                        f"({acknowledged[-1]:,.0f} values/s acknowledged, {requests} requests); live sync p99 "
                        f"{live[-1]:.0f} ms (idle {percentile(idle, 99):.0f} ms)")
                if config == CONFIGS[0]:
                    result = _direct(ctx, path, fleet.metric_ids)
                    direct.append(result["rows"] / result["seconds"])
                    line += f"; direct insert {direct[-1]:,.0f} rows/s"
                fx.log(line)
        bench.check_alive()
    note = f"{values:,} values, {THINGS} things × {METRICS} metrics, rows shuffled"
    rows = [Row("backfill.direct_insert_rows_per_s", "backfill baseline: bulk insert of the same rows, prebuilt",
                "rows/s", Stat.of(direct), note=f"{DIRECT_ROWS_PER_INSERT:,} rows per insert"),
            Row("backfill.live_sync_p99_ms.idle", "backfill: live sync reply p99, no import running", "ms",
                Stat.of([percentile(idle, 99)]), lower_is_better=True, note=f"{LIVE_EVERY_S * 1000:.0f} ms apart")]
    for config, (landed, acknowledged, live) in figures.items():
        concurrency, cap = config
        suffix = "" if config == CONFIGS[0] else f".c{concurrency}" + (f".cap{cap:.0f}" if cap else "")
        rows += [
            Row(f"backfill.values_per_s{suffix}", f"backfill: import → landed ({_label(config)})",
                "values/s", Stat.of(landed), baseline="backfill.direct_insert_rows_per_s", note=note),
            Row(f"backfill.acknowledged_values_per_s{suffix}",
                f"backfill: import, verdicts in ({_label(config)})", "values/s",
                Stat.of(acknowledged), note="the client's view; rows land within a sink batch after"),
            Row(f"backfill.live_sync_p99_ms{suffix}", f"backfill: live sync p99 during it ({_label(config)})",
                "ms", Stat.of(live), lower_is_better=True, baseline="backfill.live_sync_p99_ms.idle",
                note="1 frame × 1 metric, Prefer: wait=10, to one of the things"),
        ]
    return rows


def _label(config: tuple[int, float]) -> str:
    concurrency, cap = config
    return f"{concurrency} in flight" + (f", ≤{cap / 1000:g}k/s" if cap else "")


def _import(bench: BenchStack, path: Path, base: int, values: int, concurrency: int, cap: float, probe: str,
            ) -> tuple[float, float, int, list[float]]:
    """(seconds until landed, seconds until every verdict, requests, live sync latencies in ms meanwhile)."""
    from sluice.backfill.importer import ImportOptions, run_import

    options = ImportOptions(url=bench.url, key=bench.key, fmt="parquet", progress=False, concurrency=concurrency, max_rate=cap,
                            max_body=bench.settings.max_body_bytes - 4096)
    stop = threading.Event()
    latencies: list[float] = []
    prober = threading.Thread(target=lambda: latencies.extend(_live(bench, probe, stop)))
    prober.start()
    try:
        start = time.perf_counter()
        summary = run_import(path, options)
        ack_seconds = time.perf_counter() - start
        if summary.totals.get("accepted", 0) != values:
            raise RuntimeError(f"import accepted {summary.totals} of {values} values")
        query = (f"SELECT uniqExact(thing_id, metric_id, ts) FROM {bench.settings.database}.readings "
                 f"WHERE ts >= fromUnixTimestamp64Milli(toInt64({base}), 'UTC') "
                 f"AND ts < fromUnixTimestamp64Milli(toInt64({base + SLOT_MS}), 'UTC')")
        deadline = time.monotonic() + 120
        while bench.sql(query)[0][0] < values:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {bench.sql(query)[0][0]} of {values} values visible after 120 s")
            time.sleep(0.25)
        seconds = time.perf_counter() - start
    finally:
        stop.set()
        prober.join(30)
    return seconds, ack_seconds, summary.totals["requests"], latencies


def _live_latencies(bench: BenchStack, thing: str, seconds: float) -> list[float]:
    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    return _live(bench, thing, stop)


def _live(bench: BenchStack, thing: str, stop: threading.Event) -> list[float]:
    """Sync 1-value requests every LIVE_EVERY_S until `stop`: their latencies in ms (a device's view)."""
    out = []
    with httpx.Client(base_url=bench.url, headers={"X-Api-Key": bench.key, "Prefer": "wait=10"}, timeout=30) as c:
        while not stop.is_set():
            body = {"frames": [{"timestamp": int(time.time() * 1000), "metrics": {"m0": 1.0}}]}
            start = time.perf_counter()
            reply = c.post(f"/v2/thing/{thing}/data", json=body)
            if reply.status_code == 200:
                out.append((time.perf_counter() - start) * 1000)
            stop.wait(LIVE_EVERY_S)
    return out


def write_file(path: Path, things: list[str], base: int, timestamps: int) -> None:
    """A wide Parquet file: one row per (thing, timestamp) in shuffled order, columns m0…m9."""
    grid = [(thing, base + t * 1000) for thing in things for t in range(timestamps)]
    random.Random(base).shuffle(grid)
    columns: dict[str, list] = {"thing_id": [g[0] for g in grid], "timestamp": [g[1] for g in grid]}
    columns.update({f"m{m}": [float((r * METRICS + m) % 10_000) / 100 for r in range(len(grid))]
                    for m in range(METRICS)})
    pq.write_table(pa.table(columns), path)


def _direct(ctx: Context, path: Path, metric_ids: list[str]) -> dict:
    settings = fx.stage_settings(ctx, "backfill-direct", clickhouse_url="")
    out = settings.state_dir / "direct.json"
    return fx.run_child(["-m", "bench.backfill", "--child", "direct", "--file", str(path),
                         "--metric-ids", ",".join(metric_ids), "--out", str(out)],
                        "backfill direct insert", out, settings.state_dir / "direct.log", settings.to_env(), 240)


def _child_direct(settings: Settings, path: Path, metric_ids: list[str]) -> dict:
    """The file's readings as readings rows, prebuilt as Arrow, inserted in 100,000-row inserts (blocks)."""
    from sinks.readings import COLUMNS
    from warehouse import open_warehouse
    from warehouse.arrowconv import to_arrow_table

    warehouse = open_warehouse(settings)
    try:
        warehouse.migrate()
        types = warehouse.describe("readings")
        table = pq.read_table(path).to_pydict()
        columns: dict[str, list] = {name: [] for name in COLUMNS}
        version = int(time.time() * 1000)
        for m, metric_id in enumerate(metric_ids):
            n = len(table["thing_id"])
            columns["ts"].extend(table["timestamp"])
            columns["thing_id"].extend(table["thing_id"])
            columns["value"].extend(table[f"m{m}"])
            for name, value in (("metric_id", metric_id), ("data_type", "Double"), ("value_long", 0),
                                ("value_string", ""), ("org_id", "org_default"), ("type_version_id", "tdef_bench"),
                                ("request_id", "req_direct"), ("version", version)):
                columns[name].extend([value] * n)
        total = len(columns["ts"])
        prebuilt = [to_arrow_table("readings", {k: v[i:i + DIRECT_ROWS_PER_INSERT] for k, v in columns.items()},
                                   types) for i in range(0, total, DIRECT_ROWS_PER_INSERT)]
        start = time.perf_counter()
        for i, batch in enumerate(prebuilt):
            warehouse.insert("readings", dict(zip(batch.column_names, batch.columns)), dedup_token=f"direct-{i}")
        seconds = time.perf_counter() - start
        count = warehouse.query("SELECT count() FROM readings").rows[0][0]
        if count != total:
            raise RuntimeError(f"readings holds {count} rows, expected {total}")
    finally:
        warehouse.close()
    return {"seconds": seconds, "rows": total}


def _child(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backfill")
    parser.add_argument("--child", choices=("direct",), required=True)
    parser.add_argument("--file", required=True)
    parser.add_argument("--metric-ids", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    result = _child_direct(Settings.from_env(), Path(args.file), args.metric_ids.split(","))
    Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
