"""Seed 002's Data Ingestion API on the real stack: `POST /api/ingest` with the seed's
bodies and headers, its error table, idempotency, stream isolation, the stream_items
tables analysts query, and the per-key (per-connector) log."""

from __future__ import annotations

import dataclasses
import secrets

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from tests.conftest import eventually

# The seed's two example bodies, byte for byte as it shows them.
SEED_SINGLE = b"""{
"region": "North",
"revenue": 142000,
"target": 130000,
"updated_at": "2026-04-06T10:30:00Z"
}"""
SEED_MULTIPLE = b"""[
{ "region": "North", "revenue": 142000, "target": 130000 },
{ "region": "South", "revenue": 98000, "target": 110000 },
{ "region": "East", "revenue": 156000, "target": 140000 }
]"""


def created(reply: httpx.Response, status: int = 201) -> dict:
    assert reply.status_code == status, reply.text
    return reply.json()


def ingest(stack, key: str, body: bytes, **headers: str) -> httpx.Response:
    """POST /api/ingest as the seed shows it: Content-Type and a Bearer ingest key."""
    return httpx.post(f"{stack.url}/api/ingest", content=body, timeout=30, headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {key}",
        **{name.replace("_", "-"): value for name, value in headers.items()}})


def sql(api, stack, query: str) -> list:
    reply = api.post("/v2/admin/sql", json={"sql": query.format(db=stack.settings.database)})
    assert reply.status_code == 200, reply.text
    return reply.json()["rows"]


def failure(reply: httpx.Response, status: int, code: str) -> dict:
    """The seed dialect's error: {"success": false, "error": {"code", "message", "details"}}."""
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["success"] is False and body["error"]["code"] == code and body["error"]["message"]
    return body["error"]


@pytest.fixture(scope="module")
def org(stack):
    """A fresh org with its admin client, and a helper minting a stream with its ingest key."""
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": stack.settings.admin_key}, timeout=30) as root:
        made = created(root.post("/v2/orgs", json={"name": f"datapool {secrets.token_hex(3)}"}))
    admin = httpx.Client(base_url=stack.url, headers={"X-Api-Key": made["adminKey"]["key"]}, timeout=30)

    def stream_with_key(name: str) -> tuple[dict, dict]:
        stream = created(admin.post("/v2/streams", json={"name": name, "description": "seed 002"}))
        key = created(admin.post("/v2/api-keys", json={
            "name": f"{name} connector", "scopes": ["write"], "filters": {"streams": [name]}}))
        return stream, key

    with admin:
        yield {"id": made["id"], "admin": admin, "admin_key": made["adminKey"], "stream_with_key": stream_with_key}


# ----- the seed's examples


def test_the_seed_single_item_is_accepted_and_stored(api, stack, org):
    _, key = org["stream_with_key"]("sales")
    reply = ingest(stack, key["key"], SEED_SINGLE)
    assert reply.status_code == 202, reply.text
    body = reply.json()
    assert body == {"success": True, "data": {"stream": "sales", "items_received": 1,
                                              "request_id": body["data"]["request_id"]}}
    request_id = body["data"]["request_id"]
    assert request_id.startswith("req_")
    # No X-Item-Key: the key is generated from the request id and the item's index.
    stored = eventually(lambda: sql(api, stack, "SELECT item_key, stream, toJSONString(item), item.region::String "
                                    f"FROM {{db}}.stream_items WHERE request_id = '{request_id}'"))
    assert stored == [[f"{request_id}/0", "sales", stored[0][2], "North"]]
    assert orjson.loads(stored[0][2]) == orjson.loads(SEED_SINGLE)
    latest = eventually(lambda: sql(api, stack, "SELECT item.revenue::Int64 FROM {db}.stream_items_latest "
                                    f"WHERE org_id = '{org['id']}' AND item_key = '{request_id}/0'"))
    assert latest == [[142000]]


def test_the_seed_items_are_keyed_by_x_item_key_and_the_latest_wins(api, stack, org):
    _, key = org["stream_with_key"]("regions")
    reply = ingest(stack, key["key"], SEED_MULTIPLE, X_Item_Key="region")
    assert reply.status_code == 202, reply.text
    assert reply.json()["data"]["stream"] == "regions" and reply.json()["data"]["items_received"] == 3
    update = ingest(stack, key["key"], b'[{"region": "North", "revenue": 150000, "target": 130000}]',
                    X_Item_Key="region")
    assert update.status_code == 202
    where = f"WHERE org_id = '{org['id']}' AND stream = 'regions'"
    history = f"SELECT count() FROM {{db}}.stream_items {where}"
    eventually(lambda: sql(api, stack, history) == [[4]])
    # The same insert fills stream_items, then stream_items_latest_state through a second view:
    # for the moment between the two, a reader sees the history ahead of the latest items.
    first, second = reply.json()["data"]["request_id"], update.json()["data"]["request_id"]
    expected = [["East", 156000, first], ["North", 150000, second], ["South", 98000, first]]
    latest = f"SELECT item_key, item.revenue::Int64, request_id FROM {{db}}.stream_items_latest {where} ORDER BY item_key"
    eventually(lambda: sql(api, stack, latest) == expected, timeout=10)
    assert sql(api, stack, latest) == expected


# ----- the seed's error table, in the seed's shape


def test_invalid_payloads_are_400_at_once(stack, org):
    _, key = org["stream_with_key"]("bad-bodies")
    for body in (b'{"region": "North",', b"", b"   ", b'"North"', b"[]", b"42"):
        failure(ingest(stack, key["key"], body), 400, "INVALID_PAYLOAD")
    error = failure(ingest(stack, key["key"], b'[{"region": "North"}, "South"]'), 400, "INVALID_PAYLOAD")
    assert "item 1" in error["message"] and error["details"]["index"] == 1


def test_a_missing_or_invalid_key_is_401(stack, org):
    reply = httpx.post(f"{stack.url}/api/ingest", content=SEED_SINGLE, headers={"Content-Type": "application/json"})
    failure(reply, 401, "UNAUTHORIZED")
    failure(ingest(stack, "slk_not-a-key", SEED_SINGLE), 401, "UNAUTHORIZED")


def test_a_key_writes_only_its_own_stream(stack, org):
    _, key_a = org["stream_with_key"]("stream-a")
    org["stream_with_key"]("stream-b")
    error = failure(ingest(stack, key_a["key"], SEED_SINGLE, X_Stream="stream-b"), 404, "STREAM_NOT_FOUND")
    assert "does not match the ingest key" in error["message"]
    failure(ingest(stack, key_a["key"], SEED_SINGLE, X_Stream="no-such-stream"), 404, "STREAM_NOT_FOUND")
    reader = created(org["admin"].post("/v2/api-keys", json={
        "name": "reader", "scopes": ["read"], "filters": {"streams": ["stream-a"]}}))
    failure(ingest(stack, reader["key"], SEED_SINGLE), 403, "FORBIDDEN")  # reads, never writes
    assert ingest(stack, key_a["key"], SEED_SINGLE, X_Stream="stream-a").status_code == 202


def test_an_unfiltered_admin_names_the_stream_and_another_orgs_stream_is_not_found(stack, org):
    org["stream_with_key"]("admin-named")
    admin = org["admin_key"]["key"]
    failure(ingest(stack, admin, SEED_SINGLE), 400, "INVALID_PAYLOAD")  # which stream?
    assert ingest(stack, admin, SEED_SINGLE, X_Stream="admin-named").status_code == 202
    assert httpx.post(f"{stack.url}/api/ingest?stream=admin-named", content=SEED_SINGLE,
                      headers={"Authorization": f"Bearer {admin}"}).status_code == 202
    # The platform admin acts in the default org, which has no such stream.
    failure(ingest(stack, stack.settings.admin_key, SEED_SINGLE, X_Stream="admin-named"), 404, "STREAM_NOT_FOUND")


def test_a_body_over_1_mb_is_413(stack, org):
    _, key = org["stream_with_key"]("big")
    body = b'[{"blob": "' + b"x" * (1 << 20) + b'"}]'
    error = failure(ingest(stack, key["key"], body), 413, "PAYLOAD_TOO_LARGE")
    assert error["details"]["limit"] == 1 << 20


def test_over_the_rate_is_429_with_retry_after(stack, org):
    """An edge of its own with a tight rate, on the same broker and catalog."""
    from producers.app import create_app

    _, key = org["stream_with_key"]("hot")
    settings = dataclasses.replace(stack.settings, rate_limit=0.5, rate_burst=2.0)
    with TestClient(create_app(settings, settings.kafka_bootstrap, None)) as edge:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key['key']}"}
        statuses = [edge.post("/api/ingest", content=SEED_SINGLE, headers=headers).status_code for _ in range(3)]
        assert statuses == [202, 202, 429]
        reply = edge.post("/api/ingest", content=SEED_SINGLE, headers=headers)
        failure(reply, 429, "RATE_LIMITED")
        assert int(reply.headers["Retry-After"]) >= 1


# ----- idempotency, and the per-key log


def test_a_repeated_idempotency_key_is_accepted_and_not_stored_twice(api, stack, org):
    stream, key = org["stream_with_key"]("idem")
    headers = {"X_Item_Key": "region", "Idempotency_Key": "sale-update-20260406-103000"}
    first = ingest(stack, key["key"], SEED_MULTIPLE, **headers)
    again = ingest(stack, key["key"], SEED_MULTIPLE, **headers)
    assert first.status_code == again.status_code == 202
    marker = ingest(stack, key["key"], b'{"region": "West"}', X_Item_Key="region")  # same partition, sent last
    where = f"WHERE org_id = '{org['id']}' AND stream = 'idem'"
    eventually(lambda: sql(api, stack, f"SELECT count() FROM {{db}}.stream_items {where} AND item_key = 'West'")
               == [[1]])
    assert sql(api, stack, f"SELECT count() FROM {{db}}.stream_items {where}") == [[4]]
    with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {key['key']}"}, timeout=30) as own:
        def all_three() -> list | None:
            found = own.get(f"/v2/api-keys/{key['id']}/log").json()["items"]
            return found if len(found) == 3 else None

        log = eventually(all_three)
        # The key's own requests, newest first: timestamp, request id, items received, status, errors.
        assert [e["requestId"] for e in log] == [marker.json()["data"]["request_id"],
                                                 again.json()["data"]["request_id"],
                                                 first.json()["data"]["request_id"]]
        assert [e["itemsReceived"] for e in log] == [1, 3, 3]
        assert [e["status"] for e in log] == ["ingested"] * 3 and all(e["errors"] == [] for e in log)
        assert log[1]["duplicateOf"] == first.json()["data"]["request_id"]
        assert {e["stream"] for e in log} == {"idem"} and log[0]["timestamp"] >= log[2]["timestamp"]
        page = own.get(f"/v2/api-keys/{key['id']}/log", params={"limit": 2}).json()
        assert [e["requestId"] for e in page["items"]] == [e["requestId"] for e in log[:2]]
        rest = own.get(f"/v2/api-keys/{key['id']}/log", params={"limit": 2, "cursor": page["nextCursor"]}).json()
        assert [e["requestId"] for e in rest["items"]] == [log[2]["requestId"]] and rest["nextCursor"] is None
        # An ingest key reads its own log only.
        other = org["stream_with_key"]("idem-other")[1]
        assert own.get(f"/v2/api-keys/{other['id']}/log").status_code == 403
    # The org's admin reads it too; the rows are in ingest_log with key and stream.
    assert len(org["admin"].get(f"/v2/api-keys/{key['id']}/log").json()["items"]) == 3
    assert sql(api, stack, f"SELECT count() FROM {{db}}.ingest_log WHERE key_id = '{key['id']}' "
               "AND stream = 'idem'") == [[3]]


def test_a_rejected_request_is_in_the_log_with_its_errors(stack, org):
    _, key = org["stream_with_key"]("rejects")
    reply = ingest(stack, key["key"], b'[{"id": {"not": "a scalar"}}]', X_Item_Key="id")
    assert reply.status_code == 202  # the outline is fine; the rulebook refuses it
    with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {key['key']}"}, timeout=30) as own:
        [entry] = eventually(lambda: own.get(f"/v2/api-keys/{key['id']}/log").json()["items"])
    assert entry["status"] == "rejected" and entry["httpStatus"] == 400 and entry["itemsReceived"] == 1
    assert entry["errors"][0]["code"] == "INVALID_PAYLOAD" and entry["errors"][0]["field"] == "items[0].id"
    # The ingest log answers a stream-scoped key about its own request too (it names no thing).
    with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {key['key']}"}, timeout=30) as own:
        verdict = own.get(f"/v2/ingest-log/{reply.json()['data']['request_id']}")
    assert verdict.status_code == 200 and verdict.json()["stream"] == "rejects"


# ----- streams as catalog entities


def test_streams_are_catalog_entities_isolated_by_org(stack, org):
    admin = org["admin"]
    stream, key = org["stream_with_key"]("catalogued")
    assert stream["id"].startswith("stm_") and stream["name"] == "catalogued"
    assert admin.post("/v2/streams", json={"name": "catalogued"}).status_code == 409
    assert admin.get(f"/v2/streams/{stream['id']}").json() == stream
    assert admin.get("/v2/streams/catalogued").json() == stream
    names = {s["name"] for s in admin.get("/v2/streams", params={"limit": 1000}).json()["items"]}
    assert "catalogued" in names
    # A filter may name a stream (or data source) not created yet; it reaches nothing until then.
    reserved = admin.post("/v2/api-keys", json={"name": "x", "scopes": ["write"],
                                                "filters": {"streams": ["nowhere"]}}).json()["key"]
    with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {reserved}"}, timeout=30) as early:
        assert early.post("/api/ingest", json={"a": 1}).status_code == 404
    with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {key['key']}"}, timeout=30) as own:
        assert [s["name"] for s in own.get("/v2/streams").json()["items"]] == ["catalogued"]
        sibling = org["stream_with_key"]("catalogued-sibling")[0]
        assert own.get(f"/v2/streams/{sibling['id']}").status_code == 403  # another stream of its org
    # Another org sees none of it: not the stream, not the key's log.
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": stack.settings.admin_key}, timeout=30) as root:
        assert root.get(f"/v2/streams/{stream['id']}").status_code == 404
        assert root.get("/v2/streams/catalogued").status_code == 404
        assert root.get(f"/v2/api-keys/{key['id']}/log").status_code == 404
