"""Peer: ClickHouse's own Kafka table engine filling the same readings table.

The native, no-Python ingestion path: a `Kafka` engine table on a topic of
pre-normalized readings rows (RowBinary, one message per request = 1000 rows,
the same rows and message count as the sink benchmark's frames topic) and a
materialized view into `readings` (the warehouse's own DDL). Its batching mirrors
the sink's: one consumer, a block flushed at 1 s or at about the rows the sink
puts in one insert. The clock starts when the engine's consumer has its
partitions (system.kafka_consumers) and stops when count() reaches all rows.

chDB and the Kafka engine: `import chdb` opens a throwaway connection to read the
engine version and closes it. Closing shuts down the process-wide
StreamingStorageRegistry (ClickHouse 26.3+ registers Kafka tables there), which is
never reopened, so every later `ENGINE = Kafka` table in that process fails with
"Code: 49. DB::Exception: Shutdown was called. (LOGICAL_ERROR)". The child
therefore loads chDB's engine module without the package's __init__ and keeps its
one connection open; then the engine consumes in the background like a server.

Each run is one child process (`python -m bench.kafka_engine --child`), blocking
for seconds. With CLICKHOUSE_URL set the peer also runs on that server, which must
reach the run's broker (a server on this machine).
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import importlib.util
import json
import os
import secrets
import sys
import time
import types
from pathlib import Path

from bench import fixtures as fx
from bench.common import Context, Row, Stat
from bench.sink import CHILD_TIMEOUT_S, sink_requests
from config import Settings
from sinks.readings import COLUMNS
from warehouse import ddl

QUEUE = "readings_queue"


def run(ctx: Context) -> list[Row]:
    requests = sink_requests(ctx)
    messages = [(b["thing_id"].encode(), fx.rowbinary_message(b))
                for b in fx.frame_batches(fx.synthetic_fleet(), requests)]
    targets = [("embedded", "")]
    server = Settings.from_env().clickhouse_url
    if server:
        targets.append(("server", server))
    rows = []
    for name, url in targets:
        rates = []
        for i in range(ctx.runs):
            result = _measure(ctx, requests, messages, url)
            rates.append(result["rows"] / result["seconds"])
            fx.log(f"Kafka engine {name} run {i + 1}: {rates[-1]:,.0f} rows/s")
        suffix = "" if name == "embedded" else ".server"
        rows.append(Row(f"sink.kafka_engine_rows_per_s{suffix}", f"peer: ClickHouse Kafka engine → MV ({name})",
                        "rows/s", Stat.of(rates),
                        note=f"RowBinary, {requests} messages × {fx.VALUES_PER_MESSAGE} rows, 1 consumer"))
    return rows


def _measure(ctx: Context, requests: int, messages: list[tuple[bytes, bytes]], url: str) -> dict:
    database = f"bench_{secrets.token_hex(4)}" if url else "sluice"
    settings = fx.stage_settings(ctx, "kafka_engine", clickhouse_url=url, database=database)
    topic = f"{settings.topic_prefix}readings_rows"
    fx.create_topic(settings.kafka_bootstrap, topic)
    fx.produce(settings.kafka_bootstrap, topic, messages)
    out = settings.state_dir / "peer.json"
    log_path = settings.state_dir / "peer.log"
    return fx.run_child(["-m", "bench.kafka_engine", "--child", "--topic", topic,
                         "--rows", str(requests * fx.VALUES_PER_MESSAGE), "--out", str(out)],
                        "Kafka-engine child", out, log_path, settings.to_env(), CHILD_TIMEOUT_S)


# --- the child ---------------------------------------------------------------------------

def load_chdb_engine() -> types.ModuleType:
    """chDB's `_chdb` extension, without running `chdb/__init__` (see the module docstring)."""
    package_dir = Path(importlib.util.find_spec("chdb").origin).parent  # find_spec does not import it
    stub = types.ModuleType("chdb")
    stub.__path__ = [str(package_dir)]
    sys.modules["chdb"] = stub
    # As chdb/__init__ does: bind the engine's symbols to itself, not to other loaded libraries.
    ctypes.CDLL(str(package_dir / "_chdb.abi3.so"), mode=sys.getdlopenflags() | os.RTLD_DEEPBIND)
    return importlib.import_module("chdb._chdb")


class _Embedded:
    """One chDB connection kept open for the child's life; statements return TSV text."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._conn = load_chdb_engine().connect(str(path))

    def __call__(self, sql: str) -> str:
        result = self._conn.query(sql, "TSV")
        return result.bytes().decode() if result is not None else ""


class _Server:
    def __init__(self, settings: Settings) -> None:
        from warehouse.server import ServerWarehouse

        self._warehouse = ServerWarehouse(settings.clickhouse_url, settings.database)

    def __call__(self, sql: str) -> str:
        if sql.lstrip().upper().startswith("SELECT"):
            return "\n".join("\t".join(str(v) for v in row) for row in self._warehouse.query(sql).rows)
        self._warehouse.command(sql)
        return ""


def _child(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kafka_engine")
    parser.add_argument("--child", action="store_true", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    sql = _Embedded(settings.chdb_path) if settings.embedded_warehouse else _Server(settings)
    db = ddl.identifier(settings.database)
    for statement in ddl.statements(db):
        sql(statement)
    # Batching as the sink's: one consumer, flush after sink_batch_ms or ~16 MiB of frames (~500k rows).
    sql(f"""CREATE TABLE {db}.{QUEUE} AS {db}.readings
        ENGINE = Kafka SETTINGS kafka_broker_list = '{settings.kafka_bootstrap}', kafka_topic_list = '{args.topic}',
        kafka_group_name = '{settings.topic_prefix}kafka-engine', kafka_format = 'RowBinary',
        kafka_num_consumers = 1, kafka_max_block_size = 524288,
        kafka_flush_interval_ms = {settings.sink_batch_ms}""")
    columns = ", ".join(COLUMNS)
    sql(f"CREATE MATERIALIZED VIEW {db}.readings_from_queue TO {db}.readings AS SELECT {columns} FROM {db}.{QUEUE}")
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    assigned = (f"SELECT sum(length(assignments.partition_id)) FROM system.kafka_consumers "
                f"WHERE database = '{db}' AND table = '{QUEUE}'")
    while int(sql(assigned).strip() or 0) == 0:
        if time.monotonic() > deadline:
            raise RuntimeError("the Kafka engine's consumer got no partitions")
        time.sleep(0.005)
    start = time.perf_counter()
    count = 0
    while count < args.rows:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Kafka engine stored {count}/{args.rows} rows; consumers: "
                               f"{sql(f'SELECT * FROM system.kafka_consumers FORMAT Vertical')}")
        time.sleep(0.005)
        count = int(sql(f"SELECT count() FROM {db}.readings").strip())
    seconds = time.perf_counter() - start
    sql(f"DROP TABLE {db}.readings_from_queue")
    sql(f"DROP TABLE {db}.{QUEUE}")
    if not settings.embedded_warehouse:
        sql(f"DROP DATABASE {db}")
    Path(args.out).write_text(json.dumps({"seconds": seconds, "rows": count}))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
