"""The warehouse package against real engines.

Backends: embedded chDB; ServerWarehouse driven through clickhouse_connect's
in-process chdb interface (the server code path on a real engine, no server
needed); and a real ClickHouse server when CLICKHOUSE_URL is set (else skipped).
chDB allows one data folder per process, so both chDB-based backends share the
module's folder, each with its own database.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import uuid

import pyarrow as pa
import pytest

from config import Settings
from warehouse import ReadOnlyError, Warehouse, WarehouseError, migrations, open_warehouse, queries
from warehouse.embedded import ChdbWarehouse
from warehouse.server import ServerWarehouse

UTC = dt.timezone.utc
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z in epoch ms


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="module", params=["chdb", "server-api-on-chdb", "server"])
def wh(request, state_dir) -> Warehouse:
    database = f"sluice_test_{uuid.uuid4().hex[:12]}"
    chdb_path = Settings(state_dir=state_dir).chdb_path
    if request.param == "chdb":
        warehouse: Warehouse = ChdbWarehouse(chdb_path, database)
    elif request.param == "server-api-on-chdb":
        import clickhouse_connect

        client = clickhouse_connect.get_client(interface="chdb", path=str(chdb_path))
        warehouse = ServerWarehouse("", database, client=client)
    else:
        url = os.environ.get("CLICKHOUSE_URL", "").strip()
        if not url:
            pytest.skip("CLICKHOUSE_URL not set")
        warehouse = ServerWarehouse(url, database)
    warehouse.migrate()
    yield warehouse
    if request.param == "server":
        warehouse.command(f"DROP DATABASE IF EXISTS {database}")
    warehouse.close()


def _org() -> str:
    """A fresh org id per test, so tests sharing a database do not see each other's rows."""
    return f"org_{uuid.uuid4().hex[:8]}"


def readings(org: str, rows: list[dict]) -> dict[str, list]:
    """Readings columns from partial rows (defaults for the rest)."""
    base = dict(org_id=org, thing_id="thing1", metric_id="m", ts=T0, data_type="Double", value=0.0,
                value_long=0, value_string="", type_version_id="tv1", request_id="req1", version=1)
    full = [{**base, **row} for row in rows]
    return {name: [row[name] for row in full] for name in base}


def count(wh: Warehouse, org: str) -> int:
    return wh.query("SELECT count() FROM readings WHERE org_id = {org:String}", {"org": org}).rows[0][0]


def test_migrate_is_idempotent(wh):
    wh.migrate()
    wh.migrate()
    tables = wh.query("SELECT name FROM system.tables WHERE database = {db:String} ORDER BY name",
                      {"db": wh.database}).rows
    assert [t for (t,) in tables] == sorted(migrations.TABLES)
    assert wh.describe("readings")["ts"] == "DateTime64(3, 'UTC')"
    engine = wh.query("SELECT engine FROM system.tables WHERE database = {db:String} AND name = 'readings'",
                      {"db": wh.database}).rows
    assert engine == [("ReplacingMergeTree",)]


def test_same_token_inserts_once(wh):
    org = _org()
    # Two months, so the batch lands in two partitions (two parts, two block ids).
    batch = readings(org, [{"metric_id": f"m{i}", "ts": T0 + i * 20 * 86_400_000} for i in range(4)])
    wh.insert("readings", batch, dedup_token=f"{org}-batch-1")
    wh.insert("readings", batch, dedup_token=f"{org}-batch-1")
    assert wh.query("SELECT count() FROM readings WHERE org_id = {org:String}", {"org": org}).rows == [(4,)]
    wh.insert("readings", batch, dedup_token=f"{org}-batch-2")
    assert count(wh, org) == 8


def test_latest_event_is_by_event_time(wh):
    org = _org()
    wh.insert("readings", readings(org, [
        {"metric_id": "temp", "ts": T0 + 5000, "value": 21.5, "version": 10},
        {"metric_id": "on", "ts": T0, "data_type": "Boolean", "value": 1.0, "value_long": 1, "version": 10},
        {"metric_id": "mode", "ts": T0, "data_type": "String", "value_string": "eco", "version": 10},
        {"metric_id": "count", "ts": T0, "data_type": "Long", "value": 7.0, "value_long": 7, "version": 10},
    ]))
    # A backfill: older event time, accepted later (larger version) -> must not win.
    wh.insert("readings", readings(org, [{"metric_id": "temp", "ts": T0 + 1000, "value": 99.0, "version": 20}]))
    # Same event time re-sent later with a correction -> the larger version wins.
    wh.insert("readings", readings(org, [{"metric_id": "mode", "ts": T0, "data_type": "String",
                                           "value_string": "boost", "version": 30}]))
    latest = {row["metric_id"]: row for row in queries.latest_event(wh, org, "thing1")}
    assert latest["temp"] == {"metric_id": "temp", "ts": T0 + 5000, "data_type": "Double", "value": 21.5}
    assert latest["on"]["value"] is True
    assert latest["mode"]["value"] == "boost"
    assert latest["count"]["value"] == 7 and isinstance(latest["count"]["value"], int)
    assert isinstance(latest["temp"]["ts"], int)
    assert queries.latest_event(wh, org, "no-such-thing") == []


def test_long_values_stay_exact(wh):
    org = _org()
    big = [2**53 + 1, 2**63 - 1, -(2**63)]
    wh.insert("readings", readings(org, [
        {"metric_id": f"n{i}", "data_type": "Long", "value": float(v), "value_long": v} for i, v in enumerate(big)
    ]))
    rows = wh.query("SELECT value_long FROM readings WHERE org_id = {org:String} ORDER BY metric_id",
                    {"org": org}).rows
    assert [v for (v,) in rows] == big
    assert [r["value"] for r in queries.latest_event(wh, org, "thing1")] == big


def test_datetime64_comes_back_as_utc_datetime(wh):
    org = _org()
    wh.insert("readings", readings(org, [{"ts": T0 + 123, "version": 2**64 - 1}]))
    (ts, version), = wh.query("SELECT ts, version FROM readings WHERE org_id = {org:String}", {"org": org}).rows
    assert ts == dt.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC) and ts.tzinfo is UTC
    assert version == 2**64 - 1


def test_insert_accepts_arrow_arrays_and_datetimes(wh):
    org = _org()
    batch = readings(org, [{"metric_id": "a"}, {"metric_id": "b"}])
    batch["ts"] = pa.array([T0, T0 + 1], pa.int64())  # epoch ms as an Arrow array
    batch["value"] = pa.array([1.0, 2.0])
    wh.insert("readings", batch)
    batch["ts"] = [dt.datetime(2024, 1, 1, tzinfo=UTC), T0 + 2]  # datetimes and ms may mix
    batch["metric_id"] = ["c", "d"]
    del batch["version"]  # left out: its default, 0
    wh.insert("readings", batch)
    rows = wh.query("SELECT metric_id, ts, version FROM readings WHERE org_id = {org:String} ORDER BY metric_id",
                    {"org": org}).rows
    assert [(m, int(ts.timestamp() * 1000), v) for m, ts, v in rows] == [
        ("a", T0, 1), ("b", T0 + 1, 1), ("c", 1_704_067_200_000, 0), ("d", T0 + 2, 0)]


def test_insert_rejects_bad_columns(wh):
    with pytest.raises(ValueError, match="no such column"):
        wh.insert("readings", {"nope": [1]})
    with pytest.raises(ValueError, match="differ in length"):
        wh.insert("readings", {"org_id": ["a", "b"], "thing_id": ["x"]})
    with pytest.raises(ValueError):
        wh.insert("no_such_table", {"a": [1]})
    wh.insert("readings", {"org_id": [], "thing_id": []})  # empty batch: a no-op


def test_readonly_query_rejects_writes(wh):
    org = _org()
    wh.insert("readings", readings(org, [{}]))
    for sql in ("INSERT INTO readings SELECT * FROM readings",
                "DROP TABLE readings",
                f"SELECT 1; DROP TABLE {wh.database}.readings",
                "SHOW TABLES",
                "SELECT 1 FORMAT JSON"):
        with pytest.raises(ReadOnlyError):
            wh.readonly_query(sql)
    with pytest.raises(WarehouseError):  # readonly=1 itself refuses file access
        wh.readonly_query("SELECT * FROM file('/etc/hostname', 'LineAsString')")
    assert count(wh, org) == 1
    result = wh.readonly_query(f"-- mine\nSELECT org_id, count() AS n FROM readings WHERE org_id = '{org}' "
                               "GROUP BY org_id;")
    assert result.column_names == ("org_id", "n") and result.rows == [(org, 1)]


def test_parameters_are_bound_not_spliced(wh):
    org = _org()
    thing = "it's a \"thing\" \\ with\nnewline\tand tab; DROP TABLE readings --"
    wh.insert("readings", readings(org, [{"thing_id": thing, "value": 1.5}]))
    rows = wh.query("SELECT thing_id, value FROM readings WHERE org_id = {org:String} AND thing_id = {thing:String}",
                    {"org": org, "thing": thing}).rows
    assert rows == [(thing, 1.5)]
    echoed = wh.query("SELECT {s:String}, {a:Array(String)}, {n:Nullable(Int64)}, {t:DateTime64(3, 'UTC')}",
                      {"s": "O'Brien", "a": ["x'y", "back\\slash"], "n": None,
                       "t": dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)}).rows
    assert echoed == [("O'Brien", ["x'y", "back\\slash"], None, dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC))]


def test_dedup_token_with_quotes(wh):
    org = _org()
    token = f"{org}:it's\\odd"
    batch = readings(org, [{}])
    wh.insert("readings", batch, dedup_token=token)
    wh.insert("readings", batch, dedup_token=token)
    assert count(wh, org) == 1


def test_concurrent_inserts_and_queries(wh):
    org = _org()
    errors: list[BaseException] = []

    def insert(n: int) -> None:
        try:
            for i in range(5):
                wh.insert("readings", readings(org, [{"metric_id": f"t{n}", "ts": T0 + i}]))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    def read() -> None:
        try:
            for _ in range(10):
                queries.latest_event(wh, org, "thing1")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=insert, args=(n,)) for n in range(2)] + [threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert count(wh, org) == 10


def test_open_warehouse_chooses_backend(wh, state_dir):
    with pytest.raises(ValueError, match="CLICKHOUSE_URL"):
        open_warehouse(Settings(clickhouse_url="ftp://nowhere"))
    if not isinstance(wh, ChdbWarehouse):
        return
    # chDB: only the module's folder can be open in this process, and it is.
    embedded = open_warehouse(Settings(state_dir=state_dir, database=wh.database))
    try:
        assert isinstance(embedded, ChdbWarehouse)
        assert embedded.query("SELECT currentDatabase()").rows == [(wh.database,)]
    finally:
        embedded.close()


def test_the_frames_arrow_columns_land_as_sent(wh):
    """What the readings sink inserts: several messages' Arrow columns (dictionary-encoded ids,
    each message's own fields repeated), one insert."""
    from schemas import frames
    from sinks.readings import readings_columns

    org = _org()
    messages = [frames.decode(frames.encode({
        "request_id": f"req{i}", "org_id": org, "thing_id": f"thing{i % 2}", "type_version_id": "tv1",
        "version": 7, "frames": 1,
        "readings": {"ts": [T0 + i, T0 + i], "metric_id": ["m1", "m2"], "data_type": ["Double", "String"],
                     "value": [i / 2, 0.0], "value_long": [0, 0], "value_string": ["", f"s{i}"]},
        "locations": []})) for i in range(3)]
    wh.insert("readings", readings_columns(messages), dedup_token=f"frames-{org}")
    rows = wh.query("SELECT thing_id, metric_id, data_type, value, value_string, request_id, version "
                    "FROM readings WHERE org_id = {org:String} ORDER BY request_id, metric_id", {"org": org}).rows
    assert rows == [(f"thing{i % 2}", metric, kind, value, text, f"req{i}", 7) for i in range(3)
                    for metric, kind, value, text in (("m1", "Double", i / 2, ""), ("m2", "String", 0.0, f"s{i}"))]
