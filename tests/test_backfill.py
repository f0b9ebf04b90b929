"""`sluice import` on the real stack: 1,000,000 values, out of event-time order, killed
half-way (SIGKILL) and resumed, land exactly once; bad rows are reported, not fatal."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import eventually, session_settings

ROOT = Path(__file__).resolve().parent.parent
THINGS, METRICS, TIMESTAMPS = 100, 10, 1000  # 1,000,000 values
T0 = 1_718_884_800_000  # 2024-06-20 UTC


@pytest.fixture(scope="module")
def own(kafka_bootstrap, tmp_path_factory):
    """A stack of its own (the test stops it to OPTIMIZE … FINAL), and 100 things of 10 Double metrics."""
    from sluice.stack import Stack

    stack = Stack(session_settings(kafka_bootstrap, tmp_path_factory.mktemp("backfill"), processor_batch=100))
    stack.start()
    try:
        with httpx.Client(base_url=stack.url, headers={"X-Api-Key": stack.settings.admin_key}, timeout=30) as api:
            ids = [create(api, "/v2/definitions/metrics", {"name": f"bf{i}", "dataType": "Double",
                                                           "defaultAggregation": "Last"}) for i in range(METRICS)]
            kind = create(api, "/v2/definitions/thing-types", {"displayName": "Backfilled", "metricIds": ids})
            site = create(api, "/v2/sites", {"name": "Archive"})
            things = [create(api, f"/v2/sites/{site}/things", {"thingName": f"old-{i}", "thingTypeId": kind})
                      for i in range(THINGS)]
            yield stack, api, things
    finally:
        stack.stop()


def create(api: httpx.Client, path: str, body: dict) -> str:
    reply = api.post(path, json=body)
    assert reply.status_code == 201, reply.text
    return reply.json()["id"]


def sluice_import(stack, path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sluice.cli", "import", str(path), "--url", stack.url,
                             "--key", stack.settings.admin_key, "--quiet", *extra], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def checkpoint(path: Path) -> dict:
    try:
        return json.loads(path.with_name(path.name + ".sluice-import.json").read_text())
    except (OSError, ValueError):
        return {}


def sql(api: httpx.Client, query: str) -> list:
    reply = api.post("/v2/admin/sql", json={"sql": query})
    assert reply.status_code == 200, reply.text
    return reply.json()["rows"]


def test_bad_rows_are_reported_not_fatal(own, tmp_path):
    stack, api, things = own
    path = tmp_path / "mixed.csv"
    path.write_text("thing_id,timestamp,metric,value\n"
                    f"{things[0]},2024-06-20T12:00:00Z,bf0,1.5\n"
                    f"{things[0]},{T0 + 1000},bf1,2.5\n"
                    f"{things[0]},yesterday,bf1,2.5\n"           # bad timestamp: the importer's
                    f"{things[0]},{T0 + 2000},bf2,high\n"         # not a Double: the processor's verdict
                    f"{things[0]},{T0 + 3000},nosuch,1\n"         # unknown metric: the processor's verdict
                    f"{things[0]},{T0 + 4000},bf3,3.5\n"
                    f"thg_missing,{T0},bf0,1\n")                  # unknown thing
    done = sluice_import(stack, path)
    out, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    print(out)
    assert "accepted                 3" in out
    for reason in ("INVALID_VALUE", "UNKNOWN_METRIC", "THING_NOT_FOUND", "row 4: timestamp 'yesterday'"):
        assert reason in out
    assert "rejected                 3" in out
    eventually(lambda: sql(api, f"SELECT count() FROM {stack.settings.database}.readings "
                                f"WHERE thing_id = '{things[0]}'") == [[3]])


def test_a_million_values_killed_half_way_and_resumed_land_exactly_once(own, tmp_path):
    stack, api, things = own
    grid = [(thing, T0 + t * 1000) for thing in things for t in range(TIMESTAMPS)]
    random.Random(9).shuffle(grid)  # out of event-time order, things interleaved
    columns = {"thing_id": [g[0] for g in grid], "timestamp": [g[1] for g in grid]}
    columns.update({f"bf{m}": [float(i * METRICS + m) for i in range(len(grid))] for m in range(METRICS)})
    path = tmp_path / "history.parquet"
    pq.write_table(pa.table(columns), path)
    expected = THINGS * METRICS * TIMESTAMPS

    started = time.monotonic()
    first = sluice_import(stack, path, "--chunk-values", "100000", "--concurrency", "4")
    eventually(lambda: checkpoint(path).get("totals", {}).get("accepted", 0) >= expected // 2 or first.poll(),
               timeout=90, interval=0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    halfway = checkpoint(path)
    assert not halfway["complete"] and 0 < halfway["totals"]["accepted"] < expected

    second = sluice_import(stack, path, "--chunk-values", "100000", "--concurrency", "4")
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    print(out)
    final = checkpoint(path)
    assert final["complete"] and final["totals"]["rejected"] == 0
    assert final["totals"]["accepted"] + final["totals"].get("pending", 0) >= expected

    database = stack.settings.database
    query = (f"SELECT uniqExact(thing_id, metric_id, ts), count() FROM {database}.readings "
             f"WHERE thing_id IN ({','.join(repr(t) for t in things)})")
    eventually(lambda: sql(api, query)[0][0] == expected, timeout=60, interval=0.5)
    print(f"1,000,000 values imported, killed and resumed in {time.monotonic() - started:.1f} s; "
          f"(unique, physical) before OPTIMIZE: {sql(api, query)[0]}")
    time.sleep(1)  # nothing more trickles in
    stack.stop()  # chDB has one owner: OPTIMIZE in a process of its own
    script = f"""
from config import Settings
from warehouse import open_warehouse
w = open_warehouse(Settings.from_env())
w.command("OPTIMIZE TABLE {database}.readings FINAL")
print(list(w.query("{query.replace('"', chr(39))}").rows[0]))
w.close()
"""
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, **stack.settings.to_env()},
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [expected, expected]
