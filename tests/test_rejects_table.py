"""The rejects table keeps one row per judged item, on real engines (the `wh` backends of
tests/test_warehouse.py: chDB, and the server code path on chDB): migration 3 rebuilds the
older MergeTree table of a deployment that holds rows, keeping them; a rerun, or a run after
one that stopped halfway, finishes the job and adds nothing; and a request judged twice is
one row once merged."""

from __future__ import annotations

import uuid

import pytest

from tests.test_series import _sibling, _versions
from tests.test_warehouse import state_dir, wh  # noqa: F401  (fixtures)
from warehouse import migrations

T0 = 1_700_000_000_000
# What migration 1 created before migration 3: one row per dead letter, a request judged twice twice.
OLD_REJECTS = """CREATE TABLE IF NOT EXISTS {db}.rejects (
    request_id String,
    org_id LowCardinality(String),
    thing_id String,
    route LowCardinality(String),
    item_index Int32,
    reason LowCardinality(String),
    detail String,
    original String,
    received_at DateTime64(3, 'UTC'),
    rejected_at DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (org_id, rejected_at, request_id)
SETTINGS non_replicated_deduplication_window = 10000"""


def dead_letters(org: str, *rows: tuple[str, int, str, int, int]) -> dict[str, list]:
    """rejects columns from (request id, item index, reason, received at, rejected at) rows."""
    return {"request_id": [r[0] for r in rows], "org_id": [org] * len(rows), "thing_id": ["thg_1"] * len(rows),
            "route": ["thing_data"] * len(rows), "item_index": [r[1] for r in rows],
            "reason": [r[2] for r in rows], "detail": [f"judged at {r[4]}" for r in rows],
            "original": ['{"frames": []}'] * len(rows), "received_at": [r[3] for r in rows],
            "rejected_at": [r[4] for r in rows]}


# Judged twice: req_a (after a crash), req_b's item 2; once: req_b's item 5, and two raw messages
# that were no request (no id, no org), told apart by when they came.
JUDGEMENTS = [("req_a", -1, "UNKNOWN_METRIC", T0, T0 + 10), ("req_a", -1, "UNKNOWN_METRIC", T0, T0 + 5000),
              ("req_b", 2, "INVALID_VALUE", T0 + 1, T0 + 20), ("req_b", 5, "INVALID_VALUE", T0 + 1, T0 + 20),
              ("req_b", 2, "INVALID_VALUE", T0 + 1, T0 + 6000)]
UNDECODABLE = [("", -1, "UNDECODABLE", T0 + 2, T0 + 2), ("", -1, "UNDECODABLE", T0 + 3, T0 + 3)]


def rows(wh, database: str, org: str, final: str = "") -> list[tuple]:
    return wh.query(f"SELECT request_id, item_index, reason, detail FROM {database}.rejects {final} "
                    "WHERE org_id = {org:String} ORDER BY request_id, item_index, received_at, rejected_at",
                    {"org": org}).rows


def shape(wh, database: str) -> list[tuple]:
    return wh.query("SELECT name, engine, sorting_key FROM system.tables WHERE database = {db:String} "
                    "AND name LIKE 'rejects%' ORDER BY name", {"db": database}).rows


ONE_PER_ITEM = [("req_a", -1, "UNKNOWN_METRIC", f"judged at {T0 + 5000}"),
                ("req_b", 2, "INVALID_VALUE", f"judged at {T0 + 6000}"),
                ("req_b", 5, "INVALID_VALUE", f"judged at {T0 + 20}")]
NEW_SHAPE = [("rejects", "ReplacingMergeTree", "org_id, request_id, item_index, reason, received_at")]


def test_a_request_judged_twice_is_one_row_the_latest(wh):  # noqa: F811
    org = f"org_{uuid.uuid4().hex[:8]}"
    wh.insert("rejects", dead_letters(org, *JUDGEMENTS[:3]), dedup_token=uuid.uuid4().hex)
    wh.insert("rejects", dead_letters(org, *JUDGEMENTS[3:]), dedup_token=uuid.uuid4().hex)
    wh.insert("rejects", dead_letters("", *UNDECODABLE), dedup_token=uuid.uuid4().hex)
    assert rows(wh, wh.database, org, "FINAL") == ONE_PER_ITEM
    wh.command(f"OPTIMIZE TABLE {wh.database}.rejects FINAL")
    assert rows(wh, wh.database, org) == ONE_PER_ITEM
    assert len(rows(wh, wh.database, "")) == 2  # the messages that were no request stay apart


@pytest.fixture()
def old_deployment(wh, state_dir, monkeypatch):  # noqa: F811
    """A database as migrations 1 and 2 left it before rejects was rebuilt, holding dead letters;
    yields (a warehouse of the same backend on it, its database, the org of the rows)."""
    database = f"sluice_test_{uuid.uuid4().hex[:12]}"
    wh.command(f"CREATE DATABASE {database}")
    wh.command(OLD_REJECTS.format(db=database))
    old = _sibling(wh, database, state_dir)
    with monkeypatch.context() as before:
        before.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:2])
        old.migrate()  # migration 1 finds rejects there (IF NOT EXISTS) and leaves it as it was
    org = f"org_{uuid.uuid4().hex[:8]}"
    old.insert("rejects", dead_letters(org, *JUDGEMENTS))
    old.insert("rejects", dead_letters("", *UNDECODABLE))
    try:
        yield old, database, org
    finally:
        old.command(f"DROP DATABASE IF EXISTS {database}")
        old.close()


def test_an_old_rejects_table_is_rebuilt_keeping_its_rows_and_a_rerun_changes_nothing(old_deployment):
    old, database, org = old_deployment
    assert shape(old, database) == [("rejects", "MergeTree", "org_id, rejected_at, request_id")]
    stored = rows(old, database, org)
    assert len(stored) == 5
    old.migrate()
    assert shape(old, database) == NEW_SHAPE
    # Every judged item survives, its latest judgement; the copy may have merged the others already.
    assert rows(old, database, org, "FINAL") == ONE_PER_ITEM
    copied = rows(old, database, org)
    assert set(copied) <= set(stored)
    assert len(rows(old, database, "")) == 2
    old.migrate()
    assert _versions(old, database) == [(m.version, 1) for m in migrations.MIGRATIONS]
    assert rows(old, database, org) == copied and shape(old, database) == NEW_SHAPE
    assert not migrations.rebuild_rejects(database, old.command, lambda sql: old.query(sql).rows)
    assert rows(old, database, org) == copied


class Stop(Exception):
    pass


@pytest.mark.parametrize("stop_at", ["EXCHANGE TABLES", "DROP TABLE sluice_test"])
def test_a_rebuild_stopped_halfway_is_finished_by_the_next_run(old_deployment, stop_at):
    old, database, org = old_deployment

    def run(sql: str) -> None:
        if sql.startswith(stop_at) and "IF EXISTS" not in sql:
            raise Stop(sql)
        old.command(sql)

    def rebuild_rejects(run) -> bool:
        return migrations.rebuild_rejects(database, run, lambda sql: old.query(sql).rows)

    with pytest.raises(Stop):
        rebuild_rejects(run)
    late = dead_letters(org, ("req_late", -1, "FORBIDDEN", T0 + 9, T0 + 9))
    if stop_at == "EXCHANGE TABLES":
        assert shape(old, database)[0][1] == "MergeTree"  # nothing changed for readers
        old.insert("rejects", late)
    else:
        assert shape(old, database)[0] == NEW_SHAPE[0] and shape(old, database)[1][1] == "MergeTree"
        old.insert("rejects_rebuilt", late)  # a writer that still had the old table
    assert rebuild_rejects(old.command) is (stop_at == "EXCHANGE TABLES")
    assert shape(old, database) == NEW_SHAPE
    # Each judged item once, the late one too, however the run stopped.
    late_row = ("req_late", -1, "FORBIDDEN", f"judged at {T0 + 9}")
    assert rows(old, database, org, "FINAL") == sorted(ONE_PER_ITEM + [late_row])
    old.command(f"OPTIMIZE TABLE {database}.rejects FINAL")
    assert rows(old, database, org) == sorted(ONE_PER_ITEM + [late_row])
    assert len(rows(old, database, "")) == 2
