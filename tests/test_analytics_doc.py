"""docs/analytics.md tells the truth: its example fleet goes through the pipeline, and
every SQL block of the page runs (as written, but for the database and the org id)
and returns the rows its example promises. `sluice plot` draws the fleet to a PNG."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import re
import secrets
import struct
from pathlib import Path

import httpx
import pytest

from sluice import cli
from tests.conftest import eventually

DOC = Path(__file__).resolve().parent.parent / "docs" / "analytics.md"
WAIT = {"Prefer": "wait=10"}
T0 = int(dt.datetime(2025, 3, 1, 10, tzinfo=dt.timezone.utc).timestamp() * 1000)
MINUTE = 60_000
GERMANY = {"Inverter 1": (52.52, 13.405), "Inverter 2": (48.137, 11.575), "Inverter 3": (40.417, -3.704)}


def sql_blocks() -> list[tuple[str, str]]:
    """(the `###` heading above it, the SQL) for every ```sql block of the page."""
    blocks, heading = [], ""
    for match in re.finditer(r"^### ([^\n]+)$|^```sql\n(.*?)^```", DOC.read_text(), re.M | re.S):
        if match.group(1):
            heading = match.group(1).strip()
        else:
            blocks.append((heading, match.group(2)))
    return blocks


def created(reply: httpx.Response, status: int = 201) -> dict:
    assert reply.status_code == status, reply.text
    return reply.json()


def frame(minutes: int, thing: str, **metrics: float) -> dict:
    lat, lon = GERMANY[thing]
    return {"timestamp": T0 + minutes * MINUTE, "metrics": metrics, "location": {"latitude": lat, "longitude": lon}}


@pytest.fixture(scope="module")
def fleet(stack):
    """The page's example fleet, in a fresh org, through the pipeline: {org, requests}."""
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": stack.settings.admin_key}, timeout=30) as root:
        org = created(root.post("/v2/orgs", json={"name": f"demo {secrets.token_hex(3)}"}))
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": org["adminKey"]["key"]}, timeout=30) as api:
        metrics = [created(api.post("/v2/definitions/metrics", json={
            "name": name, "dataType": "Double", "defaultAggregation": "Avg", "unitLabel": unit}))["id"]
            for name, unit in (("acPower", "W"), ("cabinetTemp", "°C"))]
        kind = created(api.post("/v2/definitions/thing-types", json={"displayName": "Inverter", "metricIds": metrics}))
        site = created(api.post("/v2/sites", json={"name": "North Field"}))["id"]
        things = {name: created(api.post(f"/v2/sites/{site}/things", json={
            "thingName": name, "thingTypeId": kind["id"]}))["id"] for name in GERMANY}
        requests = 0

        def send(thing: str, frames: list[dict], status: int = 200) -> None:
            nonlocal requests
            reply = api.post(f"/v2/thing/{things[thing]}/data", json={"frames": frames}, headers=WAIT)
            assert reply.status_code == status, reply.text
            requests += 1

        # Every ten minutes from 10:00 to 11:50; Inverter 2 silent from 10:20 to 11:10; Inverter 3 once.
        send("Inverter 1", [frame(10 * i, "Inverter 1", acPower=1000 + 10 * i, cabinetTemp=30 + 0.5 * i)
                            for i in range(12)])
        send("Inverter 2", [frame(10 * i, "Inverter 2", acPower=800 + 10 * i, cabinetTemp=40 + i)
                            for i in (0, 1, 2, 7, 8, 9, 10, 11)])
        send("Inverter 3", [frame(0, "Inverter 3", acPower=500, cabinetTemp=25)])
        send("Inverter 1", [frame(0, "Inverter 1", acPower=1005)])  # a correction: replaces the first 1000
        send("Inverter 3", [frame(10, "Inverter 3", windSpeed=3)], 400)
        send("Inverter 3", [frame(20, "Inverter 3", windSpeed=4)], 400)
        send("Inverter 3", [frame(30, "Inverter 3", acPower="high")], 400)

        created(api.post("/v2/streams", json={"name": "sales"}))
        for items in ([{"region": "North", "revenue": 142000, "target": 130000},
                       {"region": "South", "revenue": 98000, "target": 110000},
                       {"region": "East", "revenue": 156000, "target": 140000}],
                      [{"region": "North", "revenue": 150000, "target": 130000}]):
            reply = api.post("/api/ingest", json=items, headers={
                "X-Stream": "sales", "X-Item-Key": "region", "Authorization": f"Bearer {org['adminKey']['key']}"})
            assert reply.status_code == 202, reply.text
            requests += 1

        created(api.post("/v2/datasources", json={"name": "Greenhouse", "externalId": "67890"}))
        batch = {"datasource_id": "67890", "data": [
            {"timestamp": "2025-01-01T10:00:00Z", "value": 21.2}, {"timestamp": "2025-01-01T11:00:00Z", "value": 21.9},
            {"timestamp": "2025-01-01T12:00:00Z", "value": 22.5}]}
        for _ in range(2):  # sent twice: counted once
            created(api.post("/restapi/datasource/insert", json=batch), 200)
            requests += 1

    def landed() -> bool:
        counts = query(stack, f"""SELECT
            (SELECT uniqExact(thing_id, metric_id, ts) + max(value = 1005) FROM sluice.readings
             WHERE org_id = 'org_demo'),
            (SELECT uniqExact(request_id) FROM sluice.ingest_log WHERE org_id = 'org_demo'),
            (SELECT count() FROM sluice.rejects WHERE org_id = 'org_demo'),
            (SELECT count() FROM sluice.stream_items_latest WHERE org_id = 'org_demo' AND item.revenue::Int64 = 150000),
            (SELECT uniqExact(ts, record_key) FROM sluice.datasource_records WHERE org_id = 'org_demo'),
            (SELECT uniqExact(place_id) FROM sluice.places WHERE org_id = 'org_demo'),
            (SELECT uniqExact(thing_id) FROM sluice.things WHERE org_id = 'org_demo'),
            (SELECT uniqExact(metric_id) FROM sluice.metric_definitions WHERE org_id = 'org_demo'),
            (SELECT uniqExact(version_id) FROM sluice.thing_types WHERE org_id = 'org_demo')""", org["id"])
        return list(counts[0].values()) == [43, requests, 3, 1, 3, 1, 3, 2, 1]

    eventually(landed, timeout=60)
    return {"org": org["id"], "requests": requests, "key": org["adminKey"]["key"]}


def query(stack, sql: str, org: str, key: str | None = None) -> list[dict]:
    """Run `sql` as the page writes it, on the session's database and the fleet's org: on the
    admin's route, or with an org's `key` on the org-scoped one."""
    sql = sql.replace("sluice.", f"{stack.settings.database}.").replace("'org_demo'", f"'{org}'")
    reply = httpx.post(f"{stack.url}/v2/sql" if key else f"{stack.url}/v2/admin/sql",
                       json={"sql": sql, "format": "json"}, headers={"X-Api-Key": key or stack.settings.admin_key},
                       timeout=30)
    assert reply.status_code == 200, reply.text
    return [json.loads(line) for line in reply.text.splitlines()]


def at(minutes: int) -> str:
    moment = dt.datetime.fromtimestamp((T0 + minutes * MINUTE) / 1000, dt.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S.000")


def per_reason(rows: list[dict]) -> dict:
    found: dict[str, int] = {}
    for row in rows:
        found[row["reason"]] = found.get(row["reason"], 0) + row["rejects"]
    return found


def my_org(rows: list[dict], org: str) -> dict:
    mine = [r for r in rows if r["org_id"] == org]
    return {k: sum(r[k] for r in mine) for k in ("requests", "ingested", "rejected", "frames_received",
                                                 "frames_ingested")}


# What each example of the page answers on the fleet, by its heading's number.
EXPECTED = {
    "1": lambda rows, fleet: rows == [
        {"thing": "Inverter 1", "metric": "acPower", "value": 1110, "unit": "W", "at": at(110)},
        {"thing": "Inverter 1", "metric": "cabinetTemp", "value": 35.5, "unit": "°C", "at": at(110)},
        {"thing": "Inverter 2", "metric": "acPower", "value": 910, "unit": "W", "at": at(110)},
        {"thing": "Inverter 2", "metric": "cabinetTemp", "value": 51, "unit": "°C", "at": at(110)},
        {"thing": "Inverter 3", "metric": "acPower", "value": 500, "unit": "W", "at": at(0)},
        {"thing": "Inverter 3", "metric": "cabinetTemp", "value": 25, "unit": "°C", "at": at(0)}],
    "2": lambda rows, fleet: rows == [
        {"hour": "2025-03-01 10:00:00", "avg_w": 1025.83, "readings": 6},
        {"hour": "2025-03-01 11:00:00", "avg_w": 1085, "readings": 6}],
    "3": lambda rows, fleet: rows == [
        {"thing": "Inverter 2", "silent_from": at(20), "silent_until": at(70), "minutes": 50}],
    "4": lambda rows, fleet: rows == [
        {"thing": "Inverter 1", "avg_w": 1055.4, "peak_w": 1110}, {"thing": "Inverter 2", "avg_w": 860, "peak_w": 910}],
    "5": lambda rows, fleet: rows == [{"thing": "Inverter 3", "last_reading": at(0)}],
    "6": lambda rows, fleet: rows == [
        {"thing": "Inverter 1", "readings": 24, "metrics": 2}, {"thing": "Inverter 2", "readings": 16, "metrics": 2},
        {"thing": "Inverter 3", "readings": 2, "metrics": 2}],
    "7": lambda rows, fleet: rows == [
        {"thing": "Inverter 1", "latitude": 52.52, "longitude": 13.405, "at": at(110)},
        {"thing": "Inverter 2", "latitude": 48.137, "longitude": 11.575, "at": at(110)}],
    "8": lambda rows, fleet: per_reason(rows) == {"UNKNOWN_METRIC": 2, "INVALID_VALUE": 1},
    "9": lambda rows, fleet: my_org(rows, fleet["org"]) == {
        "requests": fleet["requests"], "ingested": fleet["requests"] - 3, "rejected": 3,
        # frames: 12 + 8 + 1 + 1 readings frames, 3 refused ones, 3 + 1 stream items, 3 + 3 records
        "frames_received": 35, "frames_ingested": 32},
    "10": lambda rows, fleet: rows == [
        {"thing_type": "Inverter", "metric": "acPower", "data_type": "Double", "unit": "W"},
        {"thing_type": "Inverter", "metric": "cabinetTemp", "data_type": "Double", "unit": "°C"}],
    "11": lambda rows, fleet: rows == [
        {"site": "North Field", "things": 3, "names": ["Inverter 1", "Inverter 2", "Inverter 3"]}],
    "12": lambda rows, fleet: rows == [
        {"item_key": "East", "revenue": 156000, "target": 140000, "of_target": 1.114},
        {"item_key": "North", "revenue": 150000, "target": 130000, "of_target": 1.154},
        {"item_key": "South", "revenue": 98000, "target": 110000, "of_target": 0.891}],
    "13": lambda rows, fleet: rows == [
        {"hour": "2025-01-01 10:00:00", "records": 1, "avg_value": 21.2},
        {"hour": "2025-01-01 11:00:00", "records": 1, "avg_value": 21.9},
        {"hour": "2025-01-01 12:00:00", "records": 1, "avg_value": 22.5}],
}


def test_every_query_of_the_page_returns_what_it_promises(stack, fleet):
    blocks = sql_blocks()
    numbers = [heading.split(".", 1)[0] for heading, _ in blocks]
    assert numbers == list(EXPECTED), "each SQL block of docs/analytics.md needs its expected answer here"
    for (heading, sql), number in zip(blocks, numbers):
        rows = query(stack, sql, fleet["org"])
        assert EXPECTED[number](rows, fleet), (heading, rows)


def test_every_query_of_the_page_runs_unchanged_for_an_org_key_over_its_org_alone(stack, fleet):
    for heading, sql in sql_blocks():
        rows = query(stack, sql, fleet["org"], fleet["key"])
        assert EXPECTED[heading.split(".", 1)[0]](rows, fleet), (heading, rows)
        assert {row["org_id"] for row in rows if "org_id" in row} <= {fleet["org"]}, (heading, rows)
    # Without its `org_id = 'org_demo'` filters a query still sees this org alone.
    unfiltered = "SELECT uniqExact(thing_id, metric_id, ts) AS n, uniqExact(org_id) AS orgs FROM sluice.readings"
    assert query(stack, unfiltered, fleet["org"], fleet["key"]) == [{"n": 42, "orgs": 1}]


def test_sluice_plot_draws_a_png(stack, fleet, monkeypatch, tmp_path, capsys):
    for name, value in stack.settings.to_env().items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "inverter1.png"
    thing = query(stack, "SELECT thing_id FROM sluice.things WHERE org_id = 'org_demo' AND name = 'Inverter 1'",
                  fleet["org"])[0]["thing_id"]
    assert cli.main(["plot", thing, "acPower", "--from", "2025-03-01T09:30:00Z", "--to", "2025-03-01T12:30:00Z",
                     "--out", str(out)]) == 0
    assert "12 points of acPower for Inverter 1" in capsys.readouterr().out
    png = out.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (800, 360) and 10_000 < len(png) < 200_000
    # A name is ambiguous across orgs only if two things share it; an unknown one is refused.
    assert cli.main(["plot", "no such thing", "acPower", "--from", "2025-03-01", "--to", "2025-03-02"]) == 1
    assert "no thing named" in capsys.readouterr().err


def test_the_clickhouse_connect_walkthrough_runs_two_of_the_pages_queries_with_an_org_key(stack, fleet, monkeypatch):
    """"Connect your tool": its Python block, as written but for the port, the database and the
    org id, connects clickhouse-connect to the stack's ClickHouse port with the fleet's org key."""
    section = DOC.read_text().split("## Connect your tool", 1)[1]
    snippet = re.search(r"^```python\n(.*?)^```", section, re.M | re.S).group(1)
    queries = [sql for _, sql in sql_blocks()]
    for sql in re.findall(r'"""\n(.*?)"""', snippet, re.S):
        assert sql in queries, f"the walkthrough's query is not one of the page's examples:\n{sql}"
    db = stack.settings.database
    snippet = (snippet.replace("port=8123", f"port={stack.settings.clickhouse_port}")
               .replace('database="sluice"', f'database="{db}"').replace("sluice.", f"{db}.")
               .replace("'org_demo'", f"'{fleet['org']}'"))
    monkeypatch.setenv("SLUICE_KEY", fleet["key"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(snippet, "docs/analytics.md", "exec"), {})
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["Inverter 1: 1055.4 W on average, 1110.0 W at most",
                         "Inverter 2: 860.0 W on average, 910.0 W at most"], lines
    assert lines[2].split() == ["site", "things", "names"], lines
    assert lines[3].split()[:3] == ["North", "Field", "3"] and "Inverter 3" in lines[3], lines
