"""`sluice sql` and the admin SQL endpoint are read-only, stream, and speak CSV and JSON lines.

Every kind of statement an analyst must not run is sent through the edge's
endpoint, through the CLI (which goes through the edge while the stack runs)
and straight to both warehouse backends, against real engines; afterwards the
tables are all still there with their rows. The engine's own readonly = 1 is
also checked alone, with our lexer out of the way.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from sluice import cli
from tests.conftest import eventually
from tests.seed import SEED_FRAMES

# (kind, statement): `{db}` is the session's database.
REFUSED = [
    ("insert", "INSERT INTO {db}.places (org_id, place_id) VALUES ('org_x', 'plc_x')"),
    ("insert select", "INSERT INTO {db}.places SELECT * FROM {db}.places"),
    ("alter update", "ALTER TABLE {db}.readings UPDATE value = 0 WHERE 1"),
    ("alter delete", "ALTER TABLE {db}.readings DELETE WHERE 1"),
    ("delete", "DELETE FROM {db}.readings WHERE 1"),
    ("update", "UPDATE {db}.readings SET value = 0 WHERE 1"),
    ("create", "CREATE TABLE {db}.evil (a Int8) ENGINE = Memory"),
    ("create view", "CREATE VIEW {db}.evil AS SELECT 1"),
    ("drop", "DROP TABLE {db}.places"),
    ("drop database", "DROP DATABASE {db}"),
    ("rename", "RENAME TABLE {db}.places TO {db}.evil"),
    ("truncate", "TRUNCATE TABLE {db}.places"),
    ("detach", "DETACH TABLE {db}.places"),
    ("attach", "ATTACH TABLE {db}.places"),
    ("optimize", "OPTIMIZE TABLE {db}.readings FINAL"),
    ("system", "SYSTEM DROP MARK CACHE"),
    ("system flush", "SYSTEM FLUSH LOGS"),
    ("set", "SET readonly = 0"),
    ("settings lifting readonly", "SELECT count() FROM {db}.places SETTINGS readonly = 0"),
    ("inner settings", "SELECT * FROM (SELECT * FROM {db}.places SETTINGS readonly = 0)"),
    ("inner settings around a file", "SELECT * FROM (SELECT * FROM file('/etc/hostname', 'LineAsString') "
                                     "SETTINGS readonly = 0)"),
    ("kill", "KILL QUERY WHERE 1"),
    ("grant", "GRANT SELECT ON *.* TO default"),
    ("revoke", "REVOKE SELECT ON *.* FROM default"),
    ("file", "SELECT * FROM file('/etc/hostname', 'LineAsString')"),
    ("file scalar", "SELECT file('/etc/hostname')"),
    ("file, name quoted", "SELECT `file`('/etc/hostname')"),
    ("file, name double-quoted and spaced", 'SELECT "file" /* */ (\'/etc/hostname\')'),
    ("url", "SELECT * FROM url('http://127.0.0.1:9/x', 'CSV', 'a String')"),
    ("s3", "SELECT * FROM s3('http://127.0.0.1:9/b/k.csv', 'CSV', 'a String')"),
    ("hdfs", "SELECT * FROM hdfs('hdfs://127.0.0.1:9/x', 'CSV', 'a String')"),
    ("remote", "SELECT * FROM remote('127.0.0.1:9', system.one)"),
    ("remoteSecure", "SELECT * FROM remoteSecure('127.0.0.1:9', system.one)"),
    ("mysql", "SELECT * FROM mysql('127.0.0.1:9', 'd', 't', 'u', 'p')"),
    ("postgresql", "SELECT * FROM postgresql('127.0.0.1:9', 'd', 't', 'u', 'p')"),
    ("jdbc", "SELECT * FROM jdbc('jdbc:x://h/d', 't')"),
    ("odbc", "SELECT * FROM odbc('DSN=x', 't')"),
    ("input", "SELECT * FROM input('a String')"),
    ("executable", "SELECT * FROM executable('id', 'TSV', 'a String')"),
    ("chDB python", "SELECT * FROM Python(settings)"),
    ("cluster", "SELECT * FROM cluster('default', system.one)"),
    ("two statements", "SELECT 1; DROP TABLE {db}.places"),
    ("comment hiding a statement", "SELECT 1 /* harmless */; -- really\nTRUNCATE TABLE {db}.places"),
    ("leading comment", "/* SELECT */ DROP TABLE {db}.places"),
    ("into outfile", "SELECT 1 INTO OUTFILE '/tmp/sluice-evil.csv'"),
    ("format", "SELECT 1 FORMAT TabSeparated"),
    ("empty", "-- nothing but a comment"),
]


def _sql(db: str, statement: str) -> str:
    return statement.replace("{db}", db)


def _state(api, db: str, thing: str) -> list:
    """What the refused statements would change: the tables, the thing's readings, the
    row the INSERT would add (catalog mirrors may still land meanwhile, so not every count)."""
    query = (f"SELECT groupArray(name) FROM (SELECT name FROM system.tables WHERE database = '{db}' ORDER BY name) "
             f"UNION ALL SELECT [toString(count())] FROM {db}.readings WHERE thing_id = '{thing}' "
             f"UNION ALL SELECT [toString(count())] FROM {db}.places WHERE org_id = 'org_x'")
    reply = api.post("/v2/admin/sql", json={"sql": query})
    assert reply.status_code == 200, reply.text
    return sorted(reply.json()["rows"])


@pytest.fixture()
def cli_env(stack, monkeypatch):
    """The CLI's environment pointed at the session's stack, for in-process runs."""
    for name, value in stack.settings.to_env().items():
        monkeypatch.setenv(name, value)


def test_every_kind_of_write_is_refused_by_the_edge_and_the_cli(api, stack, battery, cli_env, capsys):
    db = stack.settings.database
    assert api.post(f"/v2/thing/{battery}/data", json=SEED_FRAMES, headers={"Prefer": "wait=10"}).status_code == 200
    eventually(lambda: api.post("/v2/admin/sql", json={"sql": f"SELECT count() FROM {db}.readings WHERE "
                                                              f"thing_id = '{battery}'"}).json()["rows"] == [[5]])
    before = _state(api, db, battery)
    for kind, statement in REFUSED:
        sql = _sql(db, statement)
        for fmt in ("rows", "csv"):
            reply = api.post("/v2/admin/sql", json={"sql": sql, "format": fmt})
            assert reply.status_code == 400, (kind, fmt, reply.text)
            assert reply.json()["error"]["code"] == "INVALID_QUERY", kind
        capsys.readouterr()
        assert cli.main(["sql", sql]) == 1, kind
        err = capsys.readouterr().err
        assert err.startswith("sluice sql: ") and len(err) > 30, (kind, err)
    assert _state(api, db, battery) == before
    # A refusal says why, in words an analyst can act on.
    messages = {kind: api.post("/v2/admin/sql", json={"sql": _sql(db, s)}).json()["error"]["message"]
                for kind, s in REFUSED}
    assert "DROP" in messages["two statements"] and "read-only" in messages["two statements"]
    assert "TRUNCATE" in messages["comment hiding a statement"]
    assert "file()" in messages["file scalar"] and "url()" in messages["url"]
    assert "SETTINGS" in messages["settings lifting readonly"]
    assert messages["insert"].startswith("INSERT is a write")
    # Reading stays possible, including a keyword inside a string or a comment.
    ok = api.post("/v2/admin/sql", json={"sql": f"SELECT 'DROP TABLE x; --' AS s, count() AS n -- ; DELETE\n"
                                                f"FROM {db}.readings WHERE thing_id = '{battery}';"})
    assert ok.status_code == 200 and ok.json()["rows"] == [["DROP TABLE x; --", 5]], ok.text


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    """Both warehouse backends on a real engine in this process: embedded chDB, and the
    server backend through clickhouse_connect's chDB interface (same folder, another database)."""
    import clickhouse_connect

    from warehouse.embedded import ChdbWarehouse
    from warehouse.server import ServerWarehouse

    path = tmp_path_factory.mktemp("readonly")
    embedded = ChdbWarehouse(path, "ro_embedded")
    embedded.migrate()
    embedded.insert("places", {"org_id": ["org_a"], "place_id": ["plc_a"], "name": ["A"]})
    embedded.close()
    server = ServerWarehouse("", "ro_server", client=clickhouse_connect.get_client(interface="chdb", path=str(path)))
    server.migrate()
    server.insert("places", {"org_id": ["org_a"], "place_id": ["plc_a"], "name": ["A"]})
    embedded = ChdbWarehouse(path, "ro_embedded")
    yield {"embedded": embedded, "server": server}
    server.close()
    embedded.close()


@pytest.mark.parametrize("backend", ["embedded", "server"])
def test_both_backends_refuse_every_kind_and_the_engine_refuses_without_our_lexer(backends, backend, monkeypatch):
    from warehouse import ReadOnlyError, WarehouseError, guard

    wh = backends[backend]
    db = wh.database
    tables = sorted(r[0] for r in wh.query(f"SELECT name FROM system.tables WHERE database = '{db}'").rows)
    for kind, statement in REFUSED:
        with pytest.raises(ReadOnlyError):
            wh.readonly_query(_sql(db, statement))
        with pytest.raises(ReadOnlyError):
            wh.readonly_stream(_sql(db, statement), "CSVWithNames")
    assert sorted(r[0] for r in wh.query(f"SELECT name FROM system.tables WHERE database = '{db}'").rows) == tables
    assert wh.readonly_query(f"SELECT name FROM {db}.places").rows == [("A",)]
    # Depth: with our lexer out of the way, the engine's parser and readonly = 1 still refuse
    # (the scalar file() is the one thing only the lexer stops: readonly lets it read files).
    monkeypatch.setattr(guard, "check_readonly", lambda sql: sql)
    engine_refuses = ["insert", "drop", "two statements", "comment hiding a statement", "inner settings around a file",
                      "file", "url", "remote", "chDB python", "executable", "format", "system", "set", "kill"]
    for kind, statement in REFUSED:
        if kind in engine_refuses:
            with pytest.raises(WarehouseError):  # ReadOnlyError is one
                list(wh.readonly_stream(_sql(db, statement), "CSVWithNames"))
    assert wh.readonly_query(f"SELECT count() FROM {db}.places").rows == [(1,)]


def test_csv_and_json_lines_parse_back(api, stack, battery, cli_env, capsys):
    db = stack.settings.database
    assert api.post(f"/v2/thing/{battery}/data", json=SEED_FRAMES, headers={"Prefer": "wait=10"}).status_code == 200
    query = (f"SELECT m.name AS metric, r.ts AS ts, r.value AS value, r.value_long AS exact, "
             f"'say \"hi\", then\nleave' AS note, [1, 2] AS pair "
             f"FROM {db}.readings AS r JOIN {db}.metric_definitions AS m USING (org_id, metric_id) "
             f"WHERE r.thing_id = '{battery}' ORDER BY metric LIMIT 1 BY metric")
    eventually(lambda: len(api.post("/v2/admin/sql", json={"sql": query}).json()["rows"]) == 5)
    capsys.readouterr()
    assert cli.main(["sql", "--format", "csv", query]) == 0
    table = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert table[0] == ["metric", "ts", "value", "exact", "note", "pair"]
    assert [r[0] for r in table[1:]] == ["moduleCurrent", "moduleSoC", "moduleSoH", "moduleVoltage", "status"]
    assert table[1][1:5] == ["2024-06-20 12:00:00.000", "12.1", "0", 'say "hi", then\nleave']
    assert table[-1][3] == "1" and table[-1][5] == "[1,2]"

    assert cli.main(["sql", "--format", "json", query]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["metric"] for r in lines] == ["moduleCurrent", "moduleSoC", "moduleSoH", "moduleVoltage", "status"]
    assert lines[0] == {"metric": "moduleCurrent", "ts": "2024-06-20 12:00:00.000", "value": 12.1, "exact": 0,
                        "note": 'say "hi", then\nleave', "pair": [1, 2]}
    assert lines[-1]["exact"] == 1  # 64-bit integers as numbers, not strings

    assert cli.main(["sql", query]) == 0
    out = capsys.readouterr().out
    assert "| metric" in out and "| moduleSoC " in out and out.rstrip().endswith("(5 rows)")


def test_a_large_result_streams(api, stack):
    """200,000 rows of ~500 bytes (100 MB): the edge sends it in chunks as the engine makes
    them (no Content-Length: it never had the whole body), and the CLI writing it to a pipe
    prints as rows arrive and peaks far below the result's size."""
    query = "SELECT number AS n, repeat('x', 480) AS pad FROM numbers(200000)"
    started = time.monotonic()
    with httpx.stream("POST", f"{stack.url}/v2/admin/sql", json={"sql": query, "format": "csv"},
                      headers={"X-Api-Key": stack.settings.admin_key}, timeout=60) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/csv") and "content-length" not in reply.headers
        sizes, first_at = [], 0.0
        for chunk in reply.iter_raw():
            first_at = first_at or time.monotonic() - started
            sizes.append(len(chunk))
    total = time.monotonic() - started
    assert sum(sizes) > 200000 * 480 and len(sizes) > 3
    assert first_at < 0.75 * total, (first_at, total)  # the first rows came long before the last

    # The CLI, reporting its own peak resident set as it exits: VmHWM of its own memory map. Not
    # wait4's ru_maxrss: the child is spawned by vfork, and Linux keeps the parent's peak (this
    # test process's, 900 MB after the whole suite in CI) in the child's ru_maxrss across exec.
    peak_at_exit = ("import atexit, sys; from sluice.cli import main; "
                    "atexit.register(lambda: sys.stderr.write(next(line for line in open('/proc/self/status') "
                    "if line.startswith('VmHWM:')))); "
                    f"sys.exit(main(['sql', '--format', 'csv', {query!r}]))")
    proc = subprocess.Popen([sys.executable, "-c", peak_at_exit],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **stack.settings.to_env()})
    header = proc.stdout.readline()
    assert header == b'"n","pad"\n'
    assert proc.poll() is None  # printing began while the query was still running
    count = sum(1 for _ in proc.stdout)
    stderr = proc.stderr.read().decode()
    assert proc.wait() == 0, stderr
    assert count == 200000
    peak_kib = int(stderr.rsplit("VmHWM:", 1)[1].split()[0])  # fails loudly when it could not be read
    assert 0 < peak_kib < 100 * 1024, peak_kib  # the result is 100 MB
