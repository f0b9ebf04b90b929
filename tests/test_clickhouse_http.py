"""The ClickHouse-compatible HTTP interface (SLUICE_CLICKHOUSE_PORT), against the real stack.

clickhouse-connect, a client no one here wrote, connects with an org's key as its password
and sees only its org's rows (the two orgs of tests/test_org_sql.py, with what each sent);
the platform-admin key sees both; writes, DDL and SET are refused in ClickHouse's error shape.
Plain HTTP requests check each format's output by parsing it, the ping, where the query and
its format come from, the error shape, and the org SQL escape corpus through this door."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import clickhouse_connect
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from tests.conftest import eventually
from tests.test_org_sql import ESCAPES, SENT, admin_sql, orgs  # noqa: F401  (orgs: a fixture)


CLIENTS = Path(__file__).resolve().parent / "clients"


def base_url(stack) -> str:
    return f"http://127.0.0.1:{stack.settings.clickhouse_port}"


def client(stack, key: str, **options) -> clickhouse_connect.driver.Client:
    return clickhouse_connect.get_client(host="127.0.0.1", port=stack.settings.clickhouse_port, username="default",
                                         password=key, database=stack.settings.database, **options)


def ch(stack, key: str | None, sql: str | None = None, body: str = "", **params) -> httpx.Response:
    """One request as curl sends it: basic auth, the query in the body (or the `query` parameter)."""
    auth = ("default", key) if key else None
    if sql is not None:
        params["query"] = sql
    return httpx.post(base_url(stack) + "/", params=params, content=body.encode(), auth=auth, timeout=30)


def refused(reply: httpx.Response, code: int, status: int) -> str:
    assert reply.status_code == status, reply.text
    assert reply.headers["X-ClickHouse-Exception-Code"] == str(code), reply.headers
    assert reply.text.startswith(f"Code: {code}. DB::Exception: ") and reply.text.endswith(")\n"), reply.text
    return reply.text


def test_clickhouse_connect_sees_its_own_org(stack, orgs):
    db = stack.settings.database
    for name, org in orgs.items():
        with client(stack, org["key"]) as analyst:
            assert analyst.server_version  # the connect probes (version, timezone, settings) were answered
            assert analyst.query(f"SELECT count() AS n, uniqExact(org_id) FROM {db}.readings").result_rows == [
                (SENT[name], 1)]
            frame = analyst.query_df("SELECT thing_id, count() AS n FROM readings GROUP BY thing_id")
            assert frame.to_dict("records") == [{"thing_id": org["thing"], "n": SENT[name]}]
            table = analyst.query_arrow(f"SELECT value FROM {db}.readings ORDER BY ts")
            assert table.column("value").to_pylist() == [float(i) for i in range(SENT[name])]
            assert table.schema.field("value").type == pa.float64()
            assert analyst.command("SELECT count() FROM readings") == SENT[name]
    ids = ", ".join(f"'{org['id']}'" for org in orgs.values())
    with client(stack, stack.settings.admin_key) as admin:
        counts = admin.query(f"SELECT org_id, count() FROM {db}.readings WHERE org_id IN ({ids}) GROUP BY org_id")
        assert dict(counts.result_rows) == {org["id"]: SENT[name] for name, org in orgs.items()}
        # Many blocks of Native, as the engine streams them, read back whole.
        many = admin.query("SELECT number AS n, toString(number) AS s FROM numbers(300000)").result_rows
        assert len(many) == 300_000 and sum(n for n, _ in many) == 299_999 * 300_000 // 2 and many[-1][1] == "299999"


@pytest.mark.parametrize("statement", [
    "INSERT INTO readings (org_id) VALUES ('x')", "CREATE TABLE t (a Int8) ENGINE = Memory", "DROP TABLE readings",
    "ALTER TABLE readings DELETE WHERE 1", "SET max_threads = 1", "TRUNCATE TABLE readings",
])
def test_writes_ddl_and_set_are_refused(stack, orgs, statement):
    for key in (orgs["mine"]["key"], stack.settings.admin_key):
        with client(stack, key) as analyst, pytest.raises(DatabaseError) as refusal:
            analyst.command(statement)
        assert "164" in str(refusal.value) and "READONLY" in str(refusal.value), refusal.value
    assert admin_sql(stack, "SELECT count() AS n FROM readings WHERE org_id = 'x'") == [{"n": 0}]


def test_wrong_missing_and_filtered_keys_are_refused(stack, orgs):
    with pytest.raises(DatabaseError) as refusal:
        client(stack, "slk_not_a_key")
    assert "516" in str(refusal.value)
    text = refused(ch(stack, "slk_not_a_key", "SELECT 1"), 516, 403)
    assert "AUTHENTICATION_FAILED" in text
    refused(ch(stack, None, "SELECT 1"), 516, 403)
    text = refused(ch(stack, orgs["mine"]["filtered"], "SELECT 1"), 497, 403)
    assert "placeIds" in text and "ACCESS_DENIED" in text
    # The other places a key may come in: ClickHouse's headers, and the user/password parameters.
    key = orgs["mine"]["key"]
    by_header = httpx.post(base_url(stack), content=b"SELECT count() FROM readings",
                           headers={"X-ClickHouse-User": "analyst", "X-ClickHouse-Key": key})
    assert by_header.text == f"{SENT['mine']}\n"
    by_param = httpx.get(base_url(stack), params={"query": "SELECT count() FROM readings", "user": "default",
                                                  "password": key})
    assert by_param.text == f"{SENT['mine']}\n"


def parsed(fmt: str, data: bytes) -> list[dict]:
    """The rows of an answer in `fmt`, parsed by the format's own reader."""
    if fmt in ("JSON", "JSONCompact"):
        body = json.loads(data)
        names = [column["name"] for column in body["meta"]]
        return [dict(zip(names, row)) if fmt == "JSONCompact" else row for row in body["data"]]
    if fmt == "JSONEachRow":
        return [json.loads(line) for line in data.splitlines()]
    if fmt in ("CSVWithNames", "TabSeparatedWithNames"):
        reader = csv.DictReader(io.StringIO(data.decode()), delimiter="," if fmt.startswith("CSV") else "\t")
        return [{k: int(v) if v.isdigit() else v for k, v in row.items()} for row in reader]
    if fmt in ("CSV", "TabSeparated"):
        reader = csv.reader(io.StringIO(data.decode()), delimiter="," if fmt == "CSV" else "\t")
        return [{"n": int(n), "thing_id": thing} for n, thing in reader]
    table = {"Parquet": lambda: pq.read_table(io.BytesIO(data)),
             "Arrow": lambda: pa.ipc.open_file(pa.BufferReader(data)).read_all(),
             "ArrowStream": lambda: pa.ipc.open_stream(pa.BufferReader(data)).read_all()}[fmt]()
    return [{k: v.decode() if isinstance(v, bytes) else v for k, v in row.items()} for row in table.to_pylist()]


@pytest.mark.parametrize("fmt", ["JSON", "JSONCompact", "JSONEachRow", "TabSeparated", "TabSeparatedWithNames",
                                 "CSV", "CSVWithNames", "Parquet", "Arrow", "ArrowStream"])
def test_each_format_parses_to_the_orgs_rows(stack, orgs, fmt):
    org = orgs["theirs"]
    reply = ch(stack, org["key"], body=f"SELECT count() AS n, any(thing_id) AS thing_id FROM readings FORMAT {fmt}")
    assert reply.status_code == 200, reply.text
    assert reply.headers["X-ClickHouse-Format"] == fmt and reply.headers["X-ClickHouse-Timezone"] == "UTC"
    assert "elapsed_ns" in json.loads(reply.headers["X-ClickHouse-Summary"])
    assert parsed(fmt, reply.content) == [{"n": SENT["theirs"], "thing_id": org["thing"]}]


def test_ping_query_sources_and_default_format(stack, orgs):
    assert httpx.get(base_url(stack) + "/ping").text == "Ok.\n"
    key = orgs["mine"]["key"]
    # The `query` parameter and the body are one query, joined by a newline.
    both = ch(stack, key, "SELECT count() AS n FROM readings", body="WHERE value >= 3")
    assert both.status_code == 200 and both.text == f"{SENT['mine'] - 3}\n", both.text
    as_json = ch(stack, key, "SELECT count() AS n FROM readings", default_format="JSONEachRow")
    assert as_json.json() == {"n": SENT["mine"]}
    # A trailing FORMAT wins over default_format.
    assert ch(stack, key, "SELECT 1 AS one FORMAT CSVWithNames", default_format="JSON").text == '"one"\n1\n'
    assert ch(stack, key, "SELECT 1", database=stack.settings.database).text == "1\n"
    refused(ch(stack, key, "SELECT 1", database="system"), 81, 404)
    refused(ch(stack, key, "SELECT 1 FORMAT Nope"), 73, 404)
    refused(ch(stack, key, "SELECT count() FROM no_such_table"), 60, 404)
    # The format and database as the JDBC driver sends them: ClickHouse's request headers.
    by_headers = httpx.post(base_url(stack), content=b"SELECT 1 AS one", auth=("default", key), headers={
        "X-ClickHouse-Format": "JSONEachRow", "X-ClickHouse-Database": stack.settings.database})
    assert by_headers.json() == {"one": 1}
    # ClickHouse's compressed answers are not served: said plainly, not sent uncompressed.
    assert "compress=false" in refused(ch(stack, key, "SELECT 1", compress="1"), 36, 400)
    # clickhouse-go asks for Native at its own protocol revision, which the engine does not write: said plainly.
    assert "client_protocol_version" in refused(ch(stack, key, "SELECT 1 FORMAT Native",
                                                   client_protocol_version="54460"), 36, 400)
    # Output settings pass on; any other setting in the request does not change the query's bounds.
    strings = ch(stack, key, "SELECT toUInt64(1) AS n FORMAT JSONEachRow",
                 output_format_json_quote_64bit_integers="1", max_result_rows="0", readonly="0")
    assert strings.json() == {"n": "1"}


def test_a_whole_document_format_is_bounded_and_streamed_ones_are_not(stack):
    admin = stack.settings.admin_key
    big = f"SELECT repeat('x', 1000) AS s FROM numbers({stack.settings.sql_rows_max_bytes // 1000 + 100})"
    text = refused(ch(stack, admin, f"{big} FORMAT JSON"), 396, 500)
    assert "SLUICE_SQL_ROWS_MAX_BYTES" in text
    streamed = ch(stack, admin, f"{big} FORMAT TabSeparated")
    assert streamed.status_code == 200 and len(streamed.content) > stack.settings.sql_rows_max_bytes


def test_the_sql_routes_slots_bound_it_and_a_client_going_away_frees_its_own(stack):
    admin, url = ("default", stack.settings.admin_key), base_url(stack)
    slow = "SELECT number, sleepEachRow(0.00001) FROM numbers(100000000000) FORMAT TabSeparated"
    with contextlib.ExitStack() as held:
        readers = []  # kept: a reader dropped closes its response, which frees the slot
        for _ in range(stack.settings.sql_concurrency):
            reply = held.enter_context(httpx.stream("POST", url, content=slow.encode(), auth=admin, timeout=30))
            readers.append(reply.iter_bytes())
            assert reply.status_code == 200 and next(readers[-1])  # streaming, its slot taken
        busy = ch(stack, stack.settings.admin_key, "SELECT 1")
        refused(busy, 202, 503)
        assert busy.headers["Retry-After"] == "1"
        assert ch(stack, stack.settings.admin_key, body="SELECT 1").status_code == 503
    # The held clients went away: their queries are stopped and the slots free again.
    assert eventually(lambda: ch(stack, stack.settings.admin_key, "SELECT 1").text == "1\n", timeout=10)


def test_the_escape_corpus_is_refused_or_scoped_here_too(stack, orgs):
    db = stack.settings.database
    mine, theirs = orgs["mine"], orgs["theirs"]
    other = admin_sql(stack, f"SELECT name FROM system.databases WHERE name LIKE '{db}\\_%' AND name != "
                             f"'{db}_{mine['id']}' LIMIT 1")[0]["name"]
    leaks = []
    for escape in ESCAPES + ["SELECT name FROM system.settings", "SELECT * FROM system.tables FORMAT JSON"]:
        sql = escape.format(db=db, base=db, other=other, theirs=theirs["id"])
        reply = ch(stack, mine["key"], body=sql, default_format="JSONEachRow")
        if reply.status_code == 200:
            found = [json.loads(line) for line in reply.text.splitlines() if line.startswith("{")]
            counts = {v for r in found for k, v in r.items() if isinstance(v, int) and k != "version"}
            if theirs["thing"] in reply.text or {r.get("org_id", mine["id"]) for r in found} - {mine["id"]} \
                    or counts & {SENT["theirs"], SENT["mine"] + SENT["theirs"]}:
                leaks.append(f"{sql!r} answered {reply.text[:300]!r}")
        elif not reply.text.startswith("Code: ") or "X-ClickHouse-Exception-Code" not in reply.headers \
                or theirs["thing"] in reply.text:
            leaks.append(f"{sql!r}: {reply.status_code} {reply.text[:300]}")
    assert not leaks, "\n".join(leaks)


@pytest.fixture(scope="module")
def js_client(tmp_path_factory) -> Path:
    """A folder with ClickHouse's official JavaScript client installed from npm (pinned in
    tests/clients/package.json) beside tests/clients/query.mjs."""
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("Node.js and npm are not installed")
    folder = tmp_path_factory.mktemp("js")
    for name in ("package.json", "query.mjs"):
        shutil.copy(CLIENTS / name, folder / name)
    try:
        subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=folder, check=True, timeout=180,
                       capture_output=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"@clickhouse/client did not install from npm: {exc}")
    return folder


def test_the_official_javascript_client_sees_its_own_org(stack, orgs, js_client):
    def run(key: str, sql: str) -> dict:
        env = {**os.environ, "CLICKHOUSE_URL": base_url(stack), "CLICKHOUSE_PASSWORD": key,
               "CLICKHOUSE_DATABASE": stack.settings.database, "SQL": sql}
        done = subprocess.run(["node", "query.mjs"], cwd=js_client, env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    for name, org in orgs.items():
        assert run(org["key"], "SELECT count() AS n, any(thing_id) AS thing FROM readings") == {
            "rows": [{"n": SENT[name], "thing": org["thing"]}]}
    answer = run(orgs["mine"]["key"], "SELECT * FROM system.tables")
    assert answer["code"] == "164" and "system.tables is outside" in answer["message"], answer
    assert run("slk_not_a_key", "SELECT 1")["code"] == "516"



@pytest.fixture(scope="module")
def jdbc_driver(tmp_path_factory) -> Path:
    """A folder with ClickHouse's JDBC driver (jdbc-v2, pinned in tests/clients/jdbc/pom.xml) and its
    dependencies from Maven Central, beside tests/clients/jdbc/Query.java."""
    if not (shutil.which("mvn") and shutil.which("java")):
        pytest.skip("Maven and Java are not installed")
    folder = tmp_path_factory.mktemp("jdbc")
    for name in ("pom.xml", "Query.java"):
        shutil.copy(CLIENTS / "jdbc" / name, folder / name)
    try:
        subprocess.run(["mvn", "-q", "-B", "dependency:copy-dependencies", "-DoutputDirectory=libs"], cwd=folder,
                       check=True, timeout=300, capture_output=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"the JDBC driver did not resolve from Maven Central: {exc}")
    return folder


def test_the_jdbc_driver_sees_its_own_org(stack, orgs, jdbc_driver):
    def run(key: str, sql: str) -> str:
        env = {**os.environ, "CLICKHOUSE_PASSWORD": key, "SQL": sql,
               "JDBC_URL": f"jdbc:clickhouse://127.0.0.1:{stack.settings.clickhouse_port}/{stack.settings.database}"
                           "?compress=false"}
        done = subprocess.run(["java", "-cp", "libs/*", "Query.java"], cwd=jdbc_driver, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    for name, org in orgs.items():
        assert run(org["key"], "SELECT count() AS n, any(thing_id) AS thing FROM readings") == \
            f"{SENT[name]}\t{org['thing']}\n"
    assert "164" in run(orgs["mine"]["key"], "SELECT * FROM system.tables")
    assert "516" in run("slk_not_a_key", "SELECT 1")
