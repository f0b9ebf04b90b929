"""Seed 004 on the real stack: data sources in the catalog, `POST /restapi/datasource/insert`
with bearer auth answering after the processor's verdict, the seed's error codes in its
shape, org isolation, and records in ClickHouse once, however often they are sent."""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.conftest import eventually
from tests.test_datasource_records import SEED_BATCH, SEED_ONE

INSERT = "/restapi/datasource/insert"
INSERTED = {"message": "Data successfully inserted"}


def bearer(stack, secret: str) -> httpx.Client:
    return httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {secret}"}, timeout=30)


def ok(reply: httpx.Response, status: int = 200) -> dict:
    assert reply.status_code == status, reply.text
    return reply.json()


def refused(reply: httpx.Response, status: int, code: str) -> dict:
    """The seed's error shape: a descriptive message, the code, details."""
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["error"] == code and isinstance(body["message"], str) and body["message"], body
    return body


def new_org(stack) -> tuple[str, str]:
    """(org id, its admin key's secret)."""
    with bearer(stack, stack.settings.admin_key) as root:
        org = ok(root.post("/v2/orgs", json={"name": f"seed 004 {secrets.token_hex(3)}"}), 201)
    return org["id"], org["adminKey"]["key"]


@pytest.fixture(scope="module")
def tenant(stack):
    """An org with the seed's data source "67890" (schema inferred), and its admin's bearer client."""
    org_id, secret = new_org(stack)
    with bearer(stack, secret) as admin:
        source = ok(admin.post("/v2/datasources", json={"name": "Greenhouse", "externalId": "67890"}), 201)
        yield {"org": org_id, "admin": admin, "id": source["id"]}


def stored(api: httpx.Client, stack, org: str, datasource: str, final: bool = False) -> list[list]:
    sql = (f"SELECT record_index, toUnixTimestamp64Milli(ts), record FROM {stack.settings.database}"
           f".datasource_records {'FINAL' if final else ''} WHERE org_id = '{org}' AND datasource_id = '{datasource}'"
           " ORDER BY ts, record")
    return ok(api.post("/v2/admin/sql", json={"sql": sql}))["rows"]


def test_the_seed_bodies_are_inserted_and_land_in_clickhouse(api, stack, tenant):
    admin = tenant["admin"]
    assert ok(admin.post(INSERT, json=SEED_ONE)) == INSERTED
    assert ok(admin.post(INSERT, json=SEED_BATCH)) == INSERTED
    rows = eventually(lambda: len(found := stored(api, stack, tenant["org"], tenant["id"], final=True)) >= 4
                      and found)
    assert [(index, ts) for index, ts, _ in rows] == [
        (0, 1735725600000), (1, 1735729200000), (0, 1735732800000), (2, 1735732800000)]
    assert rows[2][2] == '{"metric":"temperature","timestamp":"2025-01-01T12:00:00Z","value":22.5}'
    # Analysts find the data source by its externalId in the `datasources` dimension table.
    by_external_id = (f"SELECT count() FROM {stack.settings.database}.datasource_records FINAL WHERE "
                      f"(org_id, datasource_id) IN (SELECT org_id, datasource_id FROM {stack.settings.database}"
                      f".datasources WHERE org_id = '{tenant['org']}' AND external_id = '67890')")
    eventually(lambda: ok(api.post("/v2/admin/sql", json={"sql": by_external_id}))["rows"] == [[4]])
    # The schema was inferred from the records and is the catalog's, by id or externalId.
    source = ok(admin.get("/v2/datasources/67890"))
    assert source["id"] == tenant["id"] and source["schemaSource"] == "inferred"
    assert source["schema"] == {"timestamp": "timestamp", "metric": "string", "value": "number"}
    assert [d["id"] for d in ok(admin.get("/v2/datasources"))["items"]] == [tenant["id"]]


def test_the_seed_error_table(stack, tenant):
    admin = tenant["admin"]
    malformed = admin.post(INSERT, content=b'{"datasource_id": "67890", "data": [',
                           headers={"Content-Type": "application/json"})
    assert refused(malformed, 400, "INVALID_PAYLOAD")["details"]["field"] == "body"
    assert "datasource_id" in refused(admin.post(INSERT, json={"data": SEED_ONE["data"]}), 400, "INVALID_PAYLOAD")[
        "message"]
    assert refused(admin.post(INSERT, json={"datasource_id": "67890", "data": {"value": 1}}), 400,
                   "INVALID_PAYLOAD")["details"]["field"] == "data"
    off = refused(admin.post(INSERT, json={"datasource_id": "67890", "data": [
        {"timestamp": "2025-01-02T10:00:00Z", "value": 21.0}, {"timestamp": "2025-01-02T11:00:00Z", "value": "warm"}]}),
        400, "SCHEMA_MISMATCH")
    assert off["details"]["index"] == 1 and off["details"]["field"] == "data[1].value"
    assert off["message"].startswith("data[1].value: expected a number")
    assert refused(admin.post(INSERT, json={"datasource_id": "nope", "data": [{"v": 1}]}), 404,
                   "DATASOURCE_NOT_FOUND")
    # 401: no token, a wrong one.
    with httpx.Client(base_url=stack.url, timeout=30) as anonymous:
        refused(anonymous.post(INSERT, json=SEED_ONE), 401, "UNAUTHORIZED")
    with bearer(stack, "slk_not-a-key") as wrong:
        refused(wrong.post(INSERT, json=SEED_ONE), 401, "UNAUTHORIZED")
    # 403: a read-only key; a key whose filters name other data sources.
    for spec in ({"scopes": ["read"]}, {"scopes": ["write"], "filters": {"streams": ["another-source"]}}):
        key = ok(admin.post("/v2/api-keys", json={"name": "k", **spec}), 201)["key"]
        with bearer(stack, key) as limited:
            refused(limited.post(INSERT, json=SEED_ONE), 403, "FORBIDDEN")
    # A key whose filters name the data source (by externalId) writes it.
    key = ok(admin.post("/v2/api-keys", json={"name": "k", "scopes": ["write"], "filters": {"streams": ["67890"]}}),
             201)["key"]
    with bearer(stack, key) as allowed:
        assert ok(allowed.post(INSERT, json=SEED_ONE)) == INSERTED
        assert ok(allowed.get(f"/v2/datasources/{tenant['id']}"))["id"] == tenant["id"]


def test_another_org_neither_writes_nor_reads_the_data_source(stack, tenant):
    _, secret = new_org(stack)
    with bearer(stack, secret) as other:
        for reference in ("67890", tenant["id"]):
            refused(other.post(INSERT, json={**SEED_ONE, "datasource_id": reference}), 404, "DATASOURCE_NOT_FOUND")
            assert other.get(f"/v2/datasources/{reference}").status_code == 404
        assert ok(other.get("/v2/datasources"))["items"] == []


def test_repeats_are_stored_once(api, stack):
    org, secret = new_org(stack)
    with bearer(stack, secret) as admin:
        source = ok(admin.post("/v2/datasources", json={"name": "declared", "schema": {
            "timestamp": "timestamp", "value": "number"}}), 201)
        assert source["schemaSource"] == "declared"
        body = {**SEED_BATCH, "datasource_id": source["id"]}
        first = admin.post(INSERT, json=body, headers={"Idempotency-Key": "batch-1"})
        assert ok(first) == INSERTED
        repeat = admin.post(INSERT, json=body, headers={"Idempotency-Key": "batch-1"})
        assert ok(repeat) == INSERTED and repeat.headers["Idempotent-Replayed"] == "true"
        resent = admin.post(INSERT, json=body)  # a re-send without a key
        assert ok(resent) == INSERTED
        # A declared schema is final.
        assert refused(admin.post(INSERT, json={**SEED_ONE, "datasource_id": source["id"]}), 400,
                       "UNKNOWN_FIELD")["details"]["field"] == "data[0].metric"

    def rows_of(reply: httpx.Response) -> int:
        sql = (f"SELECT count() FROM {stack.settings.database}.datasource_records "
               f"WHERE request_id = '{reply.headers['X-Request-Id']}'")
        return ok(api.post("/v2/admin/sql", json={"sql": sql}))["rows"][0][0]

    # The re-send landed (its rows have the highest version, so no merge removes them); the
    # idempotent repeat was never processed; the re-send replaced the first copy's rows.
    eventually(lambda: rows_of(resent) == 3)
    assert rows_of(repeat) == 0 and rows_of(first) in (0, 3)
    assert len(stored(api, stack, org, source["id"], final=True)) == 3
