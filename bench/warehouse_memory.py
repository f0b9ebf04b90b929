"""Warehouse memory: where an embedded warehouse's RSS goes while readings pile up.

`python -m bench.warehouse_memory [--inserts 700] [--seconds 300] [--out series.json]`

No Kafka: opens a ChdbWarehouse on a scratch folder, migrates, and inserts readings
batches shaped like the readings sink's (Arrow columns, dictionary-encoded ids,
150 requests × 100 frames × 10 Double metrics = 150k rows per insert, each with a
dedup token, so the rollup views run too), with a few read queries like the HTTP
side's (history, raw and rollup buckets, latest of a metric) every few inserts.
Every few seconds it samples, side by side:

- the process: VmRSS, split into RssAnon and RssFile (mapped files);
- Python: allocated blocks (sys.getallocatedblocks) and the Arrow pool's bytes;
- chDB's own accounting: MemoryTracking and every *Cache* metric in system.metrics,
  jemalloc's allocated/active/resident/retained (system.jemalloc_stats), the
  active parts (count, rows, bytes, primary key and granularity bytes in memory)
  and the merges running.

It prints first/max/last of every series and the insert rate, and writes the whole
series to --out. Each run blocks for minutes; `--seconds` bounds it.

`--session-params 'name=value&...'` opens chDB with those connection-string parameters
(server settings, e.g. memory_worker_purge_dirty_pages_threshold_ratio=0.005), to compare a
bound; chDB's jemalloc reads its options from JE_MALLOC_CONF (e.g. dirty_decay_ms:0) in the
environment at start-up.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from bench import fixtures as fx
from warehouse import series

REQUESTS_PER_INSERT = 150  # ~150k rows, the soak's insert size
QUERY_EVERY = 10  # inserts between rounds of read queries
_JEMALLOC = re.compile(r"Allocated: (\d+), active: (\d+), metadata: (\d+).*?resident: (\d+), mapped: (\d+), "
                       r"retained: (\d+)")
# The merged arenas' unused dirty pages (resident, not yet returned to the kernel).
_DIRTY = re.compile(r"Merged arenas stats:.*?dirty:\s+\S+\s+(\d+)", re.S)
_PAGE = 4096
_METRICS = """
SELECT metric, value FROM system.metrics
WHERE metric IN ('MemoryTracking', 'MergesMutationsMemoryTracking', 'MMapCacheCells')
   OR (metric LIKE '%Cache%Bytes%' AND metric NOT LIKE 'Distr%') OR metric = 'MarkCacheFiles'
"""
_PARTS = """
SELECT count(), sum(rows), sum(bytes_on_disk), sum(primary_key_bytes_in_memory_allocated),
    sum(index_granularity_bytes_in_memory_allocated)
FROM system.parts WHERE active
"""


def _status() -> dict[str, int]:
    """VmRSS, RssAnon and RssFile in bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) * 1024
    return out


def sample(wh) -> dict[str, float]:
    """One reading of every series (bytes unless the name says otherwise)."""
    point: dict[str, float] = {"t": time.monotonic(), **_status(), "py_blocks": sys.getallocatedblocks(),
                               "arrow_bytes": pa.total_allocated_bytes()}
    point.update({name: value for name, value in wh.query(_METRICS).rows if value or name == "MemoryTracking"})
    stats = wh.query("SELECT stats FROM system.jemalloc_stats").rows[0][0]
    match = _JEMALLOC.search(stats)
    if match:
        for name, value in zip(("allocated", "active", "metadata", "resident", "mapped", "retained"),
                               match.groups()):
            point[f"jemalloc_{name}"] = int(value)
    dirty = _DIRTY.search(stats)
    if dirty:
        point["jemalloc_dirty"] = int(dirty.group(1)) * _PAGE
    parts = wh.query(_PARTS).rows[0]
    point.update(zip(("parts", "part_rows", "part_bytes_on_disk", "pk_in_memory", "granularity_in_memory"),
                     (float(v or 0) for v in parts)))
    point["merges"] = wh.query("SELECT count() FROM system.merges").rows[0][0]
    return point


class Readings:
    """Readings inserts like the sink's: request i covers FRAMES ms from TS_BASE + i × FRAMES."""

    def __init__(self, requests: int) -> None:
        fleet = fx.synthetic_fleet()
        self.requests = requests
        self.fleet = fleet
        rows = requests * fx.VALUES_PER_MESSAGE
        per_request = np.repeat(np.arange(requests, dtype=np.int32), fx.VALUES_PER_MESSAGE)
        self._frame = np.tile(np.repeat(np.arange(fx.FRAMES, dtype=np.int64), fx.METRICS), requests)
        self._metric = np.tile(np.arange(fx.METRICS, dtype=np.int32), fx.FRAMES * requests)
        self._request = per_request
        self._constant = {
            "org_id": _dictionary(np.zeros(rows, np.int32), [fleet.org_id]),
            "metric_id": _dictionary(self._metric, list(fleet.metric_ids)),
            "data_type": _dictionary(np.zeros(rows, np.int32), ["Double"]),
            "value_long": pa.array(np.zeros(rows, np.int64)),
            "value_string": pa.array([""] * rows, pa.string()),
            "type_version_id": _dictionary(np.zeros(rows, np.int32), [fleet.type_version_id]),
        }

    def batch(self, index: int) -> dict[str, pa.Array]:
        first = index * self.requests
        numbers = first + np.arange(self.requests)
        things = numbers % len(self.fleet.thing_ids)
        ts = fx.TS_BASE + (first + self._request.astype(np.int64)) * fx.FRAMES + self._frame
        value = np.round((((first + self._request) * 7 + self._frame * 3 + self._metric) % 10_000) * 0.01, 2)
        return {
            **self._constant,
            "thing_id": _dictionary(things[self._request].astype(np.int32), list(self.fleet.thing_ids)),
            "ts": pa.array(ts, pa.timestamp("ms", tz="UTC")),
            "value": pa.array(value),
            "request_id": _dictionary(self._request, [f"req_bench{n:016d}" for n in numbers]),
            "version": pa.array(np.full(len(ts), int(time.time() * 1000), np.uint64)),
        }

    def last_ms(self, inserts: int) -> int:
        return fx.TS_BASE + inserts * self.requests * fx.FRAMES


def _dictionary(codes: np.ndarray, values: list[str]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(values, pa.string()))


def read_round(wh, readings: Readings, inserted: int) -> None:
    """The read side's queries over the last ~10 minutes of event time."""
    fleet = readings.fleet
    to_ms = readings.last_ms(inserted) // 60_000 * 60_000
    from_ms = to_ms - 600_000
    thing = fleet.thing_ids[inserted % len(fleet.thing_ids)]
    series.history(wh, fleet.org_id, thing, [], from_ms, to_ms, descending=True, limit=1000)
    metrics = {mid: "Avg" for mid in fleet.metric_ids[:3]}
    series.aggregates(wh, fleet.org_id, thing, metrics, from_ms, to_ms, 60_000)  # a 1-minute rollup
    series.aggregates(wh, fleet.org_id, thing, metrics, from_ms + 1, to_ms, 10_000, source="raw")
    series.latest_of_metric(wh, fleet.org_id, list(fleet.thing_ids), fleet.metric_ids[0])


def open_chdb(path: Path, session_params: str):
    """A ChdbWarehouse on `path`, its chDB engine opened with `session_params` (the query
    string of chDB's connection string, e.g. server settings) when given."""
    from warehouse import embedded

    return embedded.ChdbWarehouse(path, "sluice", engine_settings=session_params)


def run(inserts: int, seconds: float, every: float, session_params: str, scratch: Path) -> dict:
    wh = open_chdb(scratch / "chdb", session_params)
    try:
        wh.migrate()
        wh.describe("readings")  # the first describe imports pandas inside chDB: before the clock
        readings = Readings(REQUESTS_PER_INSERT)
        points = [sample(wh)]
        insert_seconds = query_seconds = 0.0
        rows = done = 0
        start = time.monotonic()
        next_sample = start + every
        while done < inserts and time.monotonic() - start < seconds:
            batch = readings.batch(done)
            began = time.perf_counter()
            wh.insert("readings", batch, dedup_token=f"memory-{done}")
            insert_seconds += time.perf_counter() - began
            rows += len(batch["ts"])
            done += 1
            if done % QUERY_EVERY == 0:
                began = time.perf_counter()
                read_round(wh, readings, done)
                query_seconds += time.perf_counter() - began
            if time.monotonic() >= next_sample:
                points.append({**sample(wh), "inserts": done})
                next_sample += every
        points.append({**sample(wh), "inserts": done})
        settings = dict(wh.query("SELECT name, value FROM system.server_settings WHERE changed").rows)
    finally:
        wh.close()
    return {"inserts": done, "rows": rows, "insert_rows_per_s": rows / insert_seconds,
            "read_round_ms": 1000 * query_seconds / max(1, done // QUERY_EVERY),
            "wall_seconds": time.monotonic() - start, "changed_server_settings": settings, "points": points}


def summary(result: dict) -> str:
    points = result["points"]
    lines = [f"{result['inserts']} inserts, {result['rows']:,} rows in {result['wall_seconds']:.0f} s: "
             f"{result['insert_rows_per_s']:,.0f} rows/s inserting, {result['read_round_ms']:.0f} ms per read round",
             f"changed server settings: {result['changed_server_settings']}",
             f"{'series':42} {'first':>10} {'max':>10} {'last':>10}  (MiB unless a count)"]
    names = [name for name in points[-1] if name not in ("t", "inserts")]
    for name in names:
        values = [p.get(name, 0) for p in points]
        scale = 1 if name in _COUNTS or name.endswith(("Cells", "Files")) else 1 / 2**20
        lines.append(f"{name:42} {values[1 if len(values) > 1 else 0] * scale:10,.1f} "
                     f"{max(values) * scale:10,.1f} {values[-1] * scale:10,.1f}")
    rss = [p["VmRSS"] for p in points[1:]] or [points[0]["VmRSS"]]
    lines.append(f"RSS last/first (after the first sample): {rss[-1] / rss[0]:.2f}")
    return "\n".join(lines)


_COUNTS = {"py_blocks", "parts", "part_rows", "merges"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.warehouse_memory", description=__doc__.split("\n")[0])
    parser.add_argument("--inserts", type=int, default=700, help="readings inserts of ~150k rows")
    parser.add_argument("--seconds", type=float, default=300, help="stop inserting after this long")
    parser.add_argument("--every", type=float, default=5, help="seconds between samples")
    parser.add_argument("--session-params", default="", help="chDB connection-string parameters, e.g. server settings")
    parser.add_argument("--out", default=None, help="write the whole series here (JSON)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sluice-memory-") as scratch:
        result = run(args.inserts, args.seconds, args.every, args.session_params, Path(scratch))
    print(summary(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
