"""Org-scoped SQL (POST /v2/sql): an org key's query sees its own org's rows and nothing
else. Two orgs send readings; each key's counts are what it sent. An escape corpus
(base tables by their full names, table functions, system tables, dictionaries, merge(),
CTEs, comments, unicode lookalikes, SETTINGS, another org's database) is each refused
or scoped: none returns a row of the other org."""

from __future__ import annotations

import json
import secrets

import httpx
import pytest

from tests.conftest import eventually

WAIT = {"Prefer": "wait=10"}
T0 = 1_740_823_200_000  # 2025-03-01 10:00 UTC
SENT = {"mine": 7, "theirs": 11}  # frames of one metric each org sends


def made(reply: httpx.Response, status: int = 201) -> dict:
    assert reply.status_code == status, reply.text
    return reply.json()


@pytest.fixture(scope="module")
def orgs(stack) -> dict:
    """Two fresh orgs with a thing each and SENT[name] readings: name -> {id, key, thing}."""
    found = {}
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": stack.settings.admin_key}, timeout=30) as root:
        for name, frames in SENT.items():
            org = made(root.post("/v2/orgs", json={"name": f"{name} {secrets.token_hex(3)}"}))
            with httpx.Client(base_url=stack.url, headers={"X-Api-Key": org["adminKey"]["key"]}, timeout=30) as api:
                metric = made(api.post("/v2/definitions/metrics", json={
                    "name": "level", "dataType": "Double", "defaultAggregation": "Avg"}))["id"]
                kind = made(api.post("/v2/definitions/thing-types", json={"displayName": "Tank",
                                                                          "metricIds": [metric]}))["id"]
                site = made(api.post("/v2/sites", json={"name": f"{name} site"}))["id"]
                thing = made(api.post(f"/v2/sites/{site}/things", json={"thingName": f"{name} tank",
                                                                        "thingTypeId": kind}))["id"]
                reply = api.post(f"/v2/thing/{thing}/data", headers=WAIT, json={"frames": [
                    {"timestamp": T0 + i * 60_000, "metrics": {"level": i}} for i in range(frames)]})
                assert reply.status_code == 200, reply.text
                reader = made(api.post("/v2/api-keys", json={"name": "analyst", "scopes": ["read"]}))
                filtered = made(api.post("/v2/api-keys", json={"name": "site analyst", "scopes": ["read"],
                                                                "filters": {"placeIds": [site]}}))
            found[name] = {"id": org["id"], "key": reader["key"], "filtered": filtered["key"], "thing": thing}
    db = stack.settings.database
    ids = ", ".join(f"'{o['id']}'" for o in found.values())
    eventually(lambda: admin_sql(stack, f"SELECT count() FROM {db}.readings WHERE org_id IN ({ids})")
               == [{"count()": sum(SENT.values())}], timeout=60)
    return found


def admin_sql(stack, sql: str) -> list[dict]:
    reply = httpx.post(f"{stack.url}/v2/admin/sql", json={"sql": sql, "format": "json"},
                       headers={"X-Api-Key": stack.settings.admin_key}, timeout=30)
    assert reply.status_code == 200, reply.text
    return [json.loads(line) for line in reply.text.splitlines()]


def org_sql(stack, key: str, sql: str, fmt: str = "json") -> httpx.Response:
    return httpx.post(f"{stack.url}/v2/sql", json={"sql": sql, "format": fmt}, headers={"X-Api-Key": key}, timeout=30)


def rows(reply: httpx.Response) -> list[dict]:
    assert reply.status_code == 200, reply.text
    return [json.loads(line) for line in reply.text.splitlines()]


def test_each_org_key_counts_what_its_org_sent(stack, orgs):
    db = stack.settings.database
    for name, org in orgs.items():
        for sql in (f"SELECT count() AS n, uniqExact(org_id) AS orgs FROM {db}.readings",
                    "SELECT count() AS n, uniqExact(org_id) AS orgs FROM readings"):
            assert rows(org_sql(stack, org["key"], sql)) == [{"n": SENT[name], "orgs": 1}], (name, sql)
        things = rows(org_sql(stack, org["key"], f"SELECT DISTINCT thing_id FROM {db}.things"))
        assert things == [{"thing_id": org["thing"]}]
    # The admin's route still sees every org.
    ids = ", ".join(f"'{o['id']}'" for o in orgs.values())
    assert admin_sql(stack, f"SELECT uniqExact(org_id) AS n FROM {db}.readings WHERE org_id IN ({ids})") == [{"n": 2}]
    # ... also unqualified: the sessions org queries ran on select the warehouse's database again.
    for _ in range(4):
        assert admin_sql(stack, f"SELECT count() AS n FROM readings WHERE org_id IN ({ids})") == [
            {"n": sum(SENT.values())}]
    answer = org_sql(stack, orgs["mine"]["key"], "SELECT count() AS n FROM readings", "rows")
    assert answer.status_code == 200 and answer.json() == {"columns": ["n"], "rows": [[SENT["mine"]]]}


def test_a_filtered_key_and_a_key_without_read_are_refused(stack, orgs):
    reply = org_sql(stack, orgs["mine"]["filtered"], "SELECT count() FROM readings")
    assert reply.status_code == 403 and "placeIds" in reply.json()["error"]["message"], reply.text
    reply = org_sql(stack, stack.settings.admin_key, "SELECT 1")
    assert reply.status_code == 200  # the platform key reads as the default org


ESCAPES = [
    "SELECT count() FROM {db}.readings AS r JOIN {base}.readings AS b USING (org_id)",
    "SELECT count() FROM readings WHERE org_id IN (SELECT org_id FROM {base}.readings)",
    "SELECT (SELECT count() FROM {base}.readings) AS n",
    "SELECT count() FROM readings WHERE org_id IN {base}.readings",
    "SELECT * FROM `{base}`.readings",
    'SELECT * FROM "{base}"."readings"',
    "SELECT * FROM `{base}.readings`",
    "SELECT * FROM {other}.readings",
    "SELECT * FROM {base}_{theirs}.readings",
    "SELECT * FROM system.tables",
    "SELECT * FROM system.one",
    "SELECT * FROM information_schema.tables",
    "SELECT * FROM INFORMATION_SCHEMA.TABLES",
    "SELECT * FROM numbers(3)",
    "SELECT * FROM merge('{base}', '^readings$')",
    "SELECT * FROM merge({base}, 'readings')",
    "SELECT * FROM cluster('default', {base}.readings)",
    "SELECT * FROM remote('127.0.0.1', {base}.readings)",
    "SELECT * FROM url('http://127.0.0.1:1/', CSV, 'a String')",
    "SELECT * FROM file('/etc/passwd', LineAsString)",
    "SELECT * FROM dictionary('d')",
    "SELECT dictGet('d', 'x', toUInt64(1))",
    "SELECT joinGet('{base}.readings', 'value', 'x')",
    "SELECT * FROM generateRandom('a Int8') LIMIT 1",
    "SELECT * FROM view(SELECT * FROM {base}.readings)",
    "WITH r AS (SELECT * FROM {base}.readings) SELECT count() FROM r",
    "WITH (SELECT count() FROM {base}.readings) AS n SELECT n",
    "SELECT count() FROM readings /* */ UNION ALL SELECT count() FROM {base}.readings",
    "SELECT count() FROM readings -- \nUNION ALL SELECT count() FROM {base} . readings",
    "SELECT count() FROM readings WHERE 1 SETTINGS readonly = 0",
    "SELECT count() FROM readings; SELECT count() FROM {base}.readings",
    "SELECT count() FROM ｓｌｕｉｃｅ.readings",  # fullwidth lookalikes
    "SELECT count() FROM sluіce.readings",  # a Cyrillic і
    "SELECT count() FROM readings AS {base}",
    "SELECT throwIf((SELECT count() FROM {base}.readings WHERE org_id = '{theirs}') > 0)",
    "SELECT toInt64((SELECT any(thing_id) FROM {base}.readings WHERE org_id = '{theirs}'))",
    "SELECT * FROM {base}.stream_items_input",
    "SELECT * FROM {base}.ingest_log FINAL",
    "SELECT count() FROM readings WHERE org_id = '{theirs}' OR 1",
    "SELECT count() FROM {db}.readings AS a, {db}.readings AS b",
]


def test_the_escape_corpus_is_refused_or_scoped(stack, orgs):
    db = stack.settings.database
    mine, theirs = orgs["mine"], orgs["theirs"]
    # An org database of theirs exists once they have queried.
    assert org_sql(stack, theirs["key"], "SELECT 1").status_code == 200
    other = admin_sql(stack, f"SELECT name FROM system.databases WHERE name LIKE '{db}\\_%' AND name != "
                             f"'{db}_{mine['id']}' LIMIT 1")[0]["name"]
    leaks = []
    for escape in ESCAPES:
        sql = escape.format(db=db, base=db, other=other, theirs=theirs["id"])
        reply = org_sql(stack, mine["key"], sql)
        if reply.status_code == 200:
            # Scoped: every row is this org's, and no count reaches the other org's rows.
            found = rows(reply)
            orgs_seen = {r["org_id"] for r in found if "org_id" in r}
            counts = {v for r in found for k, v in r.items() if isinstance(v, int) and k != "version"}
            if theirs["thing"] in reply.text or orgs_seen - {mine["id"]} or counts & {
                    SENT["theirs"], SENT["mine"] + SENT["theirs"]}:
                leaks.append(f"{sql!r} answered {reply.text[:300]!r}")
        elif reply.status_code not in (400, 422) or theirs["thing"] in reply.text:
            # A refusal's message may quote the query (and a name in it), never the other org's data.
            leaks.append(f"{sql!r}: {reply.status_code} {reply.text[:300]}")
    assert not leaks, "\n".join(leaks)
