"""Embedded chDB statements from several threads at once: they run side by side
on the warehouse's sessions instead of queueing behind each other.

Each test opens (and closes) its own ChdbWarehouse on the module's folder, so the
close tests can check that the folder is free afterwards.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from warehouse import QueryLimits, WarehouseError, WarehouseUnavailable
from warehouse.embedded import ChdbWarehouse

ROOT = Path(__file__).resolve().parent.parent
SLOW_INSERT_SECONDS = 2  # the length of the insert that others must not wait for


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture()
def wh(folder):
    database = f"sluice_test_{uuid.uuid4().hex[:12]}"
    warehouse = ChdbWarehouse(folder, database)
    warehouse.command(f"CREATE DATABASE {database}")
    warehouse.command(f"CREATE TABLE {database}.t (n UInt32, v UInt64) ENGINE = MergeTree ORDER BY tuple()")
    yield warehouse
    warehouse.close()


def _slow_insert(wh: ChdbWarehouse) -> threading.Thread:
    """A thread running one insert that takes SLOW_INSERT_SECONDS (sleeping in the
    engine, so it costs no CPU), started once the engine shows it running."""
    marker = uuid.uuid4().hex
    sql = (f"INSERT INTO {wh.database}.t SELECT 0, sleepEachRow({SLOW_INSERT_SECONDS / 4}) "
           f"FROM numbers(4) SETTINGS async_insert = 0 /* {marker} */")
    thread = threading.Thread(target=wh.command, args=(sql,), daemon=True)
    thread.start()
    while not _running(wh, marker):
        # With one session for everything, the poll itself waits for the insert.
        assert thread.is_alive(), "the poll for the running insert waited for it to end"
    return thread


def _running(wh: ChdbWarehouse, marker: str) -> bool:
    return wh.query("SELECT count() FROM system.processes WHERE query LIKE {m:String} "
                    "AND query LIKE 'INSERT%'", {"m": f"%{marker}%"}).rows[0][0] > 0


def _in_thread(call) -> tuple[threading.Thread, list]:
    """Run `call` in a daemon thread; its result (or exception) lands in the list."""
    out: list = []

    def run() -> None:
        try:
            out.append(call())
        except BaseException as exc:  # surfaced by the caller
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_a_query_answers_while_an_insert_runs(wh):
    insert = _slow_insert(wh)
    assert wh.query("SELECT 1").rows == [(1,)]
    assert insert.is_alive()  # answered before the insert ended, not after it
    insert.join()


def test_inserts_from_several_threads_all_land(wh):
    threads_, inserts, rows = 4, 10, 1000
    errors: list[BaseException] = []

    def insert(n: int) -> None:
        try:
            for i in range(inserts):
                # Each thread's own values: chDB finds the batch by name in the calling frames.
                wh.insert("t", {"n": [n] * rows, "v": list(range(i * rows, (i + 1) * rows))})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=insert, args=(n,)) for n in range(1, threads_ + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    total = inserts * rows
    assert wh.query(f"SELECT n, count(), sum(v) FROM {wh.database}.t GROUP BY n ORDER BY n").rows == [
        (n, total, total * (total - 1) // 2) for n in range(1, threads_ + 1)]


def test_a_stream_held_open_does_not_block_other_statements(wh):
    stream = wh.readonly_stream("SELECT number FROM numbers(10000000)", "CSVWithNames")
    assert next(stream).startswith(b'"number"\n')
    try:
        thread, out = _in_thread(lambda: wh.query("SELECT 2").rows)
        thread.join(timeout=30)
        assert out == [[(2,)]]  # (the one-session warehouse waits here for the stream to end)
    finally:
        stream.close()


def test_writes_wait_for_a_free_session_of_their_lane_beyond_its_bound(folder):
    database = f"sluice_test_{uuid.uuid4().hex[:12]}"
    with ChdbWarehouse(folder, database, sessions=2) as wh:
        wh.command(f"CREATE DATABASE {database}")
        wh.command(f"CREATE TABLE {database}.t (n UInt32, v UInt64) ENGINE = MergeTree ORDER BY tuple()")
        inserts = [_slow_insert(wh), _slow_insert(wh)]  # both sessions of the writes lane
        thread, out = _in_thread(lambda: wh.command(f"INSERT INTO {database}.t VALUES (3, 3)"))
        thread.join(timeout=0.5)
        assert thread.is_alive() and out == []  # waits for a session of its lane ...
        assert wh.query("SELECT 4").rows == [(4,)]  # ... while a read, on a lane of its own, does not
        assert all(insert.is_alive() for insert in inserts)
        thread.join(timeout=30)
        assert out == [None]
        for insert in inserts:
            insert.join()


def test_every_session_uses_the_database_migrate_created(folder):
    database = f"sluice_test_{uuid.uuid4().hex[:12]}"
    with ChdbWarehouse(folder, database, limits=dataclasses.replace(QueryLimits.from_settings(), concurrency=4)) as wh:
        def hold_all_sessions() -> list:
            # Streams hold their sessions, so four at once are four sessions.
            return [wh.readonly_stream("SELECT currentDatabase() AS db FROM numbers(1000000)", "CSVWithNames")
                    for _ in range(4)]

        streams = hold_all_sessions()  # sessions opened before the database exists
        for stream in streams:
            next(stream)
        for stream in streams:
            stream.close()
        wh.migrate()
        streams = hold_all_sessions()
        try:
            assert {next(stream).split(b"\n")[1] for stream in streams} == {f'"{database}"'.encode()}
        finally:
            for stream in streams:
                stream.close()
        assert wh.query("SELECT count() FROM readings").rows == [(0,)]


def test_close_ends_the_warehouse_and_frees_the_folder(folder):
    wh = ChdbWarehouse(folder, "default")
    wh.command("CREATE TABLE IF NOT EXISTS default.kept (n UInt8) ENGINE = MergeTree ORDER BY n")
    wh.command("INSERT INTO default.kept VALUES (7)")
    assert "WarehouseUnavailable" in _open_in_another_process(folder)  # the folder is ours
    stream = wh.readonly_stream("SELECT number FROM numbers(10000000)", "CSVWithNames")
    next(stream)
    wh.close()  # does not wait for the stream ...
    wh.close()  # ... and again is a no-op
    with pytest.raises(WarehouseError, match="closed"):
        wh.query("SELECT 1")
    with pytest.raises(WarehouseError, match="closed"):
        wh.insert("kept", {"n": [1]})
    with pytest.raises(WarehouseError, match="closed"):
        next(wh.readonly_stream("SELECT 1", "CSVWithNames"))
    assert next(stream)  # ... which goes on until it ends
    stream.close()
    assert _open_in_another_process(folder) == "[(7,)]"  # every session closed: the folder is free
    with ChdbWarehouse(folder, "default") as again:
        assert again.query("SELECT n FROM kept").rows == [(7,)]


def _open_in_another_process(folder: Path) -> str:
    script = f"""
from warehouse.embedded import ChdbWarehouse
from warehouse import WarehouseUnavailable
try:
    w = ChdbWarehouse({str(folder)!r}, "default")
except WarehouseUnavailable:
    print("WarehouseUnavailable")
else:
    print(w.query("SELECT n FROM kept").rows)
    w.close()
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]



def test_engine_settings_reach_every_session(tmp_path):
    # In a process of its own: chDB reads server settings when its engine starts, and this
    # process's engine may already be running for another test's folder.
    script = f"""
from warehouse.backend import AnalystSql
from warehouse.embedded import ChdbWarehouse
w = ChdbWarehouse({str(tmp_path / "chdb")!r}, "sluice", sessions=3,
                  engine_settings="memory_worker_purge_dirty_pages_threshold_ratio=0.005")
sql = "SELECT value FROM system.server_settings WHERE name = 'memory_worker_purge_dirty_pages_threshold_ratio'"
held = [w._stream(AnalystSql(sql, sql, "t"), "CSV") for _ in range(2)]
seen = [next(stream).decode().strip() for stream in held]  # each now holds a session open
seen.append(w.query(sql).rows[0][0])  # so this one runs on a third
for stream in held:
    stream.close()
print(seen)
w.close()
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "['\"0.005\"', '\"0.005\"', '0.005']"
