"""Migrations, rollups and the time-series read queries, on real engines (the `wh`
backends of tests/test_warehouse.py: chDB, and the server code path on chDB)."""

from __future__ import annotations

import random
import uuid

import pytest

from config import Settings

from tests.test_warehouse import readings, state_dir, wh  # noqa: F401  (fixtures)
from warehouse import ddl, migrations, series
from warehouse.embedded import ChdbWarehouse
from warehouse.server import ServerWarehouse

HOUR = 3_600_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % (24 * HOUR)  # a UTC midnight
EVERY = dict(zip(series.AGGREGATIONS, series.AGGREGATIONS))


def _org() -> str:
    return f"org_{uuid.uuid4().hex[:8]}"


def _sibling(wh, database: str, state_dir):
    """A warehouse of the same backend on another database (what a restart opens)."""
    if isinstance(wh, ChdbWarehouse):
        return ChdbWarehouse(wh.path, database)
    import clickhouse_connect

    client = clickhouse_connect.get_client(interface="chdb", path=str(Settings(state_dir=state_dir).chdb_path))
    return ServerWarehouse("", database, client=client)


def _versions(wh, database: str) -> list[tuple[int, int]]:
    return wh.query(f"SELECT version, count() FROM {database}.schema_migrations GROUP BY version ORDER BY version").rows


def test_fresh_migrate_records_every_migration_once(wh):
    wh.migrate()
    wh.migrate()
    assert _versions(wh, wh.database) == [(m.version, 1) for m in migrations.MIGRATIONS]
    tables = wh.query("SELECT name FROM system.tables WHERE database = {db:String}", {"db": wh.database}).rows
    assert sorted(t for (t,) in tables) == sorted(migrations.TABLES)


def test_existing_deployment_upgrades_in_place(wh, state_dir):  # noqa: F811
    database = f"sluice_test_{uuid.uuid4().hex[:12]}"
    for statement in ddl.statements(database):  # what the IF-NOT-EXISTS schema alone created
        wh.command(statement)
    org = _org()
    # Data already stored, a replayed reading among it (not merged yet).
    rows = [{"ts": T0 + i * 1000, "value": float(i)} for i in range(90)]
    old = readings(org, rows + [{"ts": T0 + 5000, "value": 5.0, "version": 2}])
    columns = ", ".join(old)
    values = ", ".join("(" + ", ".join(repr(old[c][i]) if c != "ts" else f"fromUnixTimestamp64Milli({old[c][i]})"
                                       for c in old) + ")" for i in range(len(old["ts"])))
    wh.command(f"INSERT INTO {database}.readings ({columns}) VALUES {values}")
    upgraded = _sibling(wh, database, state_dir)
    try:
        upgraded.migrate()
        upgraded.migrate()
        assert _versions(upgraded, database) == [(m.version, 1) for m in migrations.MIGRATIONS]
        assert upgraded.describe("ingest_log")["key_id"] == "String"
        # The rollups were filled from what was stored, deduplicated, and not filled twice.
        source, buckets = series.aggregates(upgraded, org, "thing1", {"m": "Count"}, T0, T0 + HOUR, 60_000)
        assert source == "rollup_1m"
        assert [(b["ts"], b["value"]) for b in buckets["m"]] == [(T0, 60), (T0 + 60_000, 30)]
        new = readings(org, [{"ts": T0 + 100_000, "value": 1.0}])
        upgraded.insert("readings", new)  # the view keeps the rollup from now on
        assert series.aggregates(upgraded, org, "thing1", {"m": "Count"}, T0, T0 + HOUR, HOUR)[1]["m"][0]["value"] == 91
    finally:
        upgraded.command(f"DROP DATABASE IF EXISTS {database}")
        upgraded.close()


def _both(wh, org: str, metrics: dict, start: int, end: int, step: int):
    auto = series.aggregates(wh, org, "thing1", metrics, start, end, step)
    raw = series.aggregates(wh, org, "thing1", metrics, start, end, step, source="raw")
    return auto, raw


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for metric in a:
        assert [(x["ts"], x["count"]) for x in a[metric]] == [(x["ts"], x["count"]) for x in b[metric]], metric
        assert [x["value"] for x in a[metric]] == pytest.approx([x["value"] for x in b[metric]], rel=1e-12), metric


def test_rollups_answer_like_raw_for_every_aggregation_even_after_a_resend(wh):
    org = _org()
    rng = random.Random(7)
    # Three hours of one reading every 7 s for six metrics, values with fractions.
    batch = [{"metric_id": f"m_{agg}", "ts": T0 + i * 7000, "value": round(rng.uniform(-50, 50), 3)}
             for agg in series.AGGREGATIONS for i in range(3 * HOUR // 7000)]
    wh.insert("readings", readings(org, batch))
    metrics = {f"m_{agg}": agg for agg in series.AGGREGATIONS}
    for step, expected in ((60_000, "rollup_1m"), (15 * 60_000, "rollup_1m"), (HOUR, "rollup_1h"),
                           (6 * HOUR, "rollup_1h"), (24 * HOUR, "rollup_1h")):
        (source, got), (raw_source, want) = _both(wh, org, metrics, T0, T0 + 3 * HOUR, step)
        assert (source, raw_source) == (expected, "raw")
        _same(got, want)
    assert len(got["m_Count"]) == 1 and got["m_Count"][0]["value"] == len(batch) // 6
    # A range not on minute boundaries can only come from raw readings.
    assert series.aggregates(wh, org, "thing1", metrics, T0 + 1, T0 + HOUR, 60_000)[0] == "raw"

    # A client re-sends part of the same frames (another batch, larger version), one value corrected.
    resend = [dict(row, version=2) for row in batch[100:160]]
    resend[0]["value"] += 1000.0
    wh.insert("readings", readings(org, resend))
    for step in (60_000, HOUR):
        (source, got), (_, want) = _both(wh, org, metrics, T0, T0 + 3 * HOUR, step)
        assert source.startswith("rollup")
        _same(got, want)
    # Counts and sums are those of the deduplicated readings: nothing inflated.
    assert sum(b["value"] for b in got["m_Count"]) == len(batch) // 6
    expected_sum = sum(r["value"] for r in batch if r["metric_id"] == "m_Sum")
    corrected = resend[0]["metric_id"] == "m_Sum"
    assert sum(b["value"] for b in got["m_Sum"]) == pytest.approx(expected_sum + (1000.0 if corrected else 0.0))


def test_a_replayed_batch_never_reaches_the_rollups(wh):
    org = _org()
    batch = readings(org, [{"ts": T0 + i * 1000, "value": 2.0} for i in range(90)])
    for token in ("b1", "b1", "b1"):  # the sink replays a batch with its token after a crash
        wh.insert("readings", batch, dedup_token=f"{org}-{token}")
    stored = wh.query("SELECT sum(n), sum(sum_value) FROM readings_1m WHERE org_id = {org:String}", {"org": org})
    assert stored.rows == [(90, 180.0)]


def test_a_backfill_lands_in_its_event_time_bucket(wh):
    org = _org()
    wh.insert("readings", readings(org, [{"ts": T0 + 2 * HOUR + i * 1000, "value": 1.0} for i in range(10)]))
    # Arrives later, happened two hours earlier.
    wh.insert("readings", readings(org, [{"ts": T0 + 5 * 60_000 + 30_000, "value": 40.0, "version": 9}]))
    source, got = series.aggregates(wh, org, "thing1", {"m": "Sum"}, T0, T0 + 3 * HOUR, HOUR)
    assert source == "rollup_1h"
    assert [(b["ts"], b["value"], b["count"]) for b in got["m"]] == [(T0, 40.0, 1), (T0 + 2 * HOUR, 10.0, 10)]
    source, got = series.aggregates(wh, org, "thing1", {"m": "Last"}, T0, T0 + HOUR, 60_000)
    assert (source, got["m"]) == ("rollup_1m", [{"ts": T0 + 5 * 60_000, "value": 40.0, "count": 1}])


def test_history_pages_return_every_row_once_while_rows_arrive(wh):
    rows = [{"metric_id": metric, "ts": T0 + i * 1000, "value": float(i)} for i in range(40) for metric in "abc"]
    for descending in (False, True):
        org = _org()
        wh.insert("readings", readings(org, rows))
        wh.insert("readings", readings(org, rows[:30]))  # a replay: the same rows again
        seen, after = [], None
        while True:
            page = series.history(wh, org, "thing1", ["a", "c"], T0, T0 + 40_000, descending=descending,
                                  limit=7, after=after)
            seen += [(r["ts"], r["metric_id"]) for r in page]
            if len(page) < 7:
                break
            after = (page[-1]["ts"], page[-1]["metric_id"])
            # Readings arriving meanwhile on the pages already read change no later page:
            # a new one, and a re-send of the cursor's own row.
            passed = after[0] + (500 if descending else -500)
            wh.insert("readings", readings(org, [{"metric_id": "a", "ts": passed, "value": -1.0},
                                                 {"metric_id": after[1], "ts": after[0], "version": 5}]))
        expected = sorted((T0 + i * 1000, m) for i in range(40) for m in "ac")
        assert seen == (expected[::-1] if descending else expected)


def test_latest_of_metric_for_many_things(wh):
    org = _org()
    wh.insert("readings", readings(org, [
        {"thing_id": "t1", "ts": T0 + 1000, "value": 1.0}, {"thing_id": "t1", "ts": T0 + 5000, "value": 5.0},
        {"thing_id": "t2", "ts": T0 + 3000, "value": 3.0}, {"thing_id": "t3", "ts": T0, "value": 9.0},
        {"thing_id": "t1", "metric_id": "other", "ts": T0 + 9000, "value": 9.0}]))
    wh.insert("readings", readings(org, [{"thing_id": "t2", "ts": T0, "value": -1.0, "version": 7}]))  # backfill
    latest = series.latest_of_metric(wh, org, ["t1", "t2", "t4"], "m")
    assert latest == {"t1": {"ts": T0 + 5000, "data_type": "Double", "value": 5.0},
                      "t2": {"ts": T0 + 3000, "data_type": "Double", "value": 3.0}}
