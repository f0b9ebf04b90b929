"""Backfill: `sluice import` of a Parquet file of historical readings, end to end.

One stack (edge with the embedded sink, processor; rate limit off) and 100 things of
10 Double metrics. Each run writes a wide Parquet file (one row per thing and
timestamp, one column per metric; 1,000 timestamps per thing: 1,000,000 values),
rows shuffled so event time and things are interleaved, in an event-time slot of its
own. The clock runs from the start of the import (fingerprint, read, batch, send with
the defaults: 4 batches in flight, 500,000-value chunks) until every value is
queryable (uniqExact over the slot, polled every 0.25 s through the admin SQL).

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
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bench import fixtures as fx
from bench.common import Context, Row, Stat
from bench.stack_setup import METRICS, BenchStack
from config import Settings

THINGS = 100
SLOT_MS = 86_400_000
DIRECT_ROWS_PER_INSERT = 100_000


def run(ctx: Context) -> list[Row]:
    from sluice.backfill.importer import ImportOptions, run_import

    timestamps = ctx.scale(1000, 100)
    values = THINGS * METRICS * timestamps
    imported, client_only, direct = [], [], []
    with BenchStack(ctx, "backfill") as bench:
        fleet = bench.register(things=THINGS)
        for i in range(ctx.runs):
            base = fx.TS_BASE - (i + 1) * SLOT_MS  # a slot of its own per run, in the past
            path = Path(ctx.scratch) / f"backfill-{i}.parquet"
            write_file(path, fleet.thing_ids, base, timestamps)
            options = ImportOptions(url=bench.url, key=bench.key, fmt="parquet", progress=False,
                                    max_body=bench.settings.max_body_bytes - 4096)
            start = time.perf_counter()
            summary = run_import(path, options)
            client_only.append(values / (time.perf_counter() - start))
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
            imported.append(values / (time.perf_counter() - start))
            result = _direct(ctx, path, fleet.metric_ids)
            direct.append(result["rows"] / result["seconds"])
            fx.log(f"backfill run {i + 1}: import {imported[-1]:,.0f} values/s landed "
                   f"({client_only[-1]:,.0f} values/s acknowledged, {summary.totals['requests']} requests); "
                   f"direct insert {direct[-1]:,.0f} rows/s")
        bench.check_alive()
    note = f"{values:,} values, {THINGS} things × {METRICS} metrics, rows shuffled"
    return [
        Row("backfill.direct_insert_rows_per_s", "backfill baseline: bulk insert of the same rows, prebuilt",
            "rows/s", Stat.of(direct), note=f"{DIRECT_ROWS_PER_INSERT:,} rows per insert"),
        Row("backfill.values_per_s", "backfill: sluice import Parquet → landed in readings", "values/s",
            Stat.of(imported), baseline="backfill.direct_insert_rows_per_s", note=note),
        Row("backfill.acknowledged_values_per_s", "backfill: sluice import, until every verdict", "values/s",
            Stat.of(client_only), note="the client's own view; landing follows within a sink batch"),
    ]


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
