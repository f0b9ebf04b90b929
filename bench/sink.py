"""Sink: readings rows/s from a pre-filled frames topic into ClickHouse.

Each run pre-fills fresh topics with N FrameBatch messages of 1000 rows (3000 in a full run),
then a child process (`python -m bench.sink --child sink`) opens the warehouse
in its own scratch folder (chDB opens one folder per process), migrates, and runs
the real readings sink (`sinks.warehouse_sinks`) in a thread. Its clock starts when the consumer gets
its partitions and stops when the sink has inserted all N × 1000 rows (each
insert is synchronous, so inserted means stored); count() is checked afterwards.

Baseline (`--child direct`): the same rows, prebuilt as Arrow columns before the
clock starts, inserted with `warehouse.insert` in the batches the sink formed
(the same row count per insert, with a dedup token), into the same table.

With CLICKHOUSE_URL set, both run against that server as well (a fresh database
per run, dropped afterwards). Every run blocks for seconds (child start, chDB).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import threading
import time
from pathlib import Path

import schemas
from bench import fixtures as fx
from bench.common import Context, Row, Stat
from config import Settings

CHILD_TIMEOUT_S = 240
READINGS_COLUMNS = ("org_id", "thing_id", "metric_id", "ts", "data_type", "value", "value_long",
                    "value_string", "type_version_id", "request_id", "version")


def run(ctx: Context) -> list[Row]:
    requests = sink_requests(ctx)
    messages = fx.frames_messages(fx.frame_batches(fx.synthetic_fleet(), requests))
    rows = []
    targets = [("embedded", "")]
    server = Settings.from_env().clickhouse_url
    if server:
        targets.append(("server", server))
    for name, url in targets:
        sink, direct, batch_rows = [], [], 0
        for i in range(ctx.runs):
            result = _measure(ctx, "sink", requests, messages, url)
            sink.append(result["rows"] / result["seconds"])
            batch_rows = result["rows_per_insert"]
            direct_result = _measure(ctx, "direct", requests, None, url, batch_rows=batch_rows)
            direct.append(direct_result["rows"] / direct_result["seconds"])
            fx.log(f"sink {name} run {i + 1}: {sink[-1]:,.0f} rows/s ({result['inserts']} inserts); "
                   f"direct insert {direct[-1]:,.0f} rows/s")
        suffix = "" if name == "embedded" else ".server"
        note = f"{requests} messages × {fx.VALUES_PER_MESSAGE} rows, ~{batch_rows:,.0f} rows per insert"
        rows += [
            Row(f"sink.direct_insert_rows_per_s{suffix}", f"sink baseline: direct insert, prebuilt ({name})",
                "rows/s", Stat.of(direct), note=note),
            Row(f"sink.rows_per_s{suffix}", f"sink: frames topic → readings ({name})", "rows/s", Stat.of(sink),
                baseline=f"sink.direct_insert_rows_per_s{suffix}", baseline_target=0.6),
            # The same figure again, so the report also prints its ratio to the Kafka-engine peer.
            Row(f"sink.rows_per_s_vs_peer{suffix}", f"sink vs ClickHouse Kafka engine ({name})", "rows/s",
                Stat.of(sink), baseline=f"sink.kafka_engine_rows_per_s{suffix}", baseline_target=2.0),
        ]
    return rows


def sink_requests(ctx: Context) -> int:
    """Frames messages per run (1000 rows each); the Kafka-engine peer uses the same count.

    Enough for several of the sink's 16 MiB batches (~446 messages each): with 1000 the run
    lasted ~1.3 s, of which the first fetch after the assignment took ~0.2 s."""
    return ctx.scale(3000, 60)


def _measure(ctx: Context, mode: str, requests: int, messages: list | None, url: str,
             batch_rows: int = 0) -> dict:
    """One child run; pre-fills the frames topic first when `messages` is given."""
    database = f"bench_{secrets.token_hex(4)}" if url else "sluice"
    settings = fx.stage_settings(ctx, "sink", clickhouse_url=url, database=database)
    if messages is not None:
        fx.create_topics(settings)
        fx.produce(settings.kafka_bootstrap, schemas.Topics(settings.topic_prefix).frames, messages)
    out = settings.state_dir / f"{mode}.json"
    log_path = settings.state_dir / f"{mode}.log"
    return fx.run_child(["-m", "bench.sink", "--child", mode, "--requests", str(requests),
                         "--batch-rows", str(round(batch_rows)), "--out", str(out)],
                        f"sink child ({mode})", out, log_path, settings.to_env(), CHILD_TIMEOUT_S)


# --- the child: one measurement against one warehouse ------------------------------------

class CountingWarehouse:
    """Passes every call to the warehouse, counting readings inserts and their rows."""

    def __init__(self, warehouse) -> None:
        self._warehouse = warehouse
        self.inserts = self.rows = 0

    def insert(self, table, columns, dedup_token=None) -> None:
        self._warehouse.insert(table, columns, dedup_token)
        if table == "readings":
            self.inserts += 1
            self.rows += len(next(iter(columns.values())))

    def __getattr__(self, name):
        return getattr(self._warehouse, name)


def _child_sink(settings: Settings, warehouse, expected: int) -> dict:
    """Run the real frames sink until it has inserted `expected` rows (blocks)."""
    from sinks.warehouse_sinks import SINKS, build_sink

    # The first describe() imports pandas inside chDB (~1 s): a one-off start-up cost,
    # paid here so the clock sees only steady work (the baseline pays it before its clock too).
    for table in ("readings", "locations"):
        warehouse.describe(table)
    counting = CountingWarehouse(warehouse)
    readings_spec = next(spec for spec in SINKS if spec.name == "sink-readings")
    sink = build_sink(readings_spec, settings, settings.kafka_bootstrap, counting)
    thread = threading.Thread(target=sink.run, name="sink")
    thread.start()
    try:
        if not sink.ready.wait(60):
            raise RuntimeError("the sink got no partitions within 60 s")
        start = time.perf_counter()
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        while counting.rows < expected:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the sink inserted {counting.rows}/{expected} rows")
            time.sleep(0.002)
        seconds = time.perf_counter() - start
    finally:
        sink.stop()
        thread.join(30)
    return {"seconds": seconds, "rows": counting.rows, "inserts": counting.inserts,
            "rows_per_insert": counting.rows / max(1, counting.inserts)}


def _plain_columns(batches: list[dict]) -> dict[str, list]:
    """The readings rows of `batches` as plain column lists, each batch's own fields repeated."""
    columns: dict[str, list] = {name: [] for name in READINGS_COLUMNS}
    for batch in batches:
        n = len(batch["readings"]["ts"])
        for name in READINGS_COLUMNS:
            columns[name].extend(batch["readings"][name] if name in batch["readings"] else [batch[name]] * n)
    return columns


def _child_direct(warehouse, requests: int, batch_rows: int) -> dict:
    """Insert the same rows, prebuilt as one Arrow table per insert, in `batch_rows`-row batches (blocks)."""
    from warehouse.arrowconv import to_arrow_table

    batches = fx.frame_batches(fx.synthetic_fleet(), requests)
    per_insert = max(1, round(batch_rows / fx.VALUES_PER_MESSAGE)) if batch_rows else len(batches)
    types = warehouse.describe("readings")
    prebuilt = [to_arrow_table("readings", _plain_columns(group), types)
                for group in fx.chunks(batches, per_insert)]
    start = time.perf_counter()
    for i, table in enumerate(prebuilt):
        warehouse.insert("readings", dict(zip(table.column_names, table.columns)), dedup_token=f"direct-{i}")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": sum(t.num_rows for t in prebuilt), "inserts": len(prebuilt),
            "rows_per_insert": sum(t.num_rows for t in prebuilt) / len(prebuilt)}


def _child(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sink")
    parser.add_argument("--child", choices=("sink", "direct"), required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--batch-rows", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    from warehouse import open_warehouse

    settings = Settings.from_env()
    warehouse = open_warehouse(settings)
    try:
        warehouse.migrate()
        expected = args.requests * fx.VALUES_PER_MESSAGE
        if args.child == "sink":
            result = _child_sink(settings, warehouse, expected)
        else:
            result = _child_direct(warehouse, args.requests, args.batch_rows)
        count = warehouse.query("SELECT count() FROM readings").rows[0][0]
        if count != expected:
            raise RuntimeError(f"readings holds {count} rows, expected {expected}")
        if not settings.embedded_warehouse:
            warehouse.command(f"DROP DATABASE IF EXISTS {settings.database}")
    finally:
        warehouse.close()
    Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
