"""Who may do what to whom, on the real stack: keys no broader than their creator,
the platform-admin key outside every org, and Idempotency-Keys scoped to
(org, API key, target)."""

from __future__ import annotations

import secrets

import httpx
import pytest

from catalog import keys
from catalog.access import DEFAULT_ORG
from catalog.view import CatalogView
from catalog.writer import CatalogWriter
from schemas import Topics
from tests.conftest import eventually
from tests.seed import SEED_FRAMES, register_battery

SYNC = {"Prefer": "wait=10"}


def client(stack, secret: str) -> httpx.Client:
    return httpx.Client(base_url=stack.url, headers={"X-Api-Key": secret}, timeout=30)


def created(reply: httpx.Response, status: int = 201) -> dict:
    assert reply.status_code == status, reply.text
    return reply.json()


def refused(reply: httpx.Response, status: int = 403) -> str:
    assert reply.status_code == status, reply.text
    return reply.json()["error"]["message"]


def new_key(api: httpx.Client, scopes: list[str], **filters) -> dict:
    return created(api.post("/v2/api-keys", json={"name": "k", "scopes": scopes, "filters": filters}))


@pytest.fixture(scope="module")
def tenant(stack):
    """A fresh org with two sites (A, B), a thing in each, and its unfiltered admin's client."""
    with client(stack, stack.settings.admin_key) as root:
        org = created(root.post("/v2/orgs", json={"name": f"tenant {secrets.token_hex(3)}"}))
    with client(stack, org["adminKey"]["key"]) as admin:
        a, b = (created(admin.post("/v2/sites", json={"name": n}))["id"] for n in ("A", "B"))
        a1, b1 = (created(admin.post(f"/v2/sites/{s}/things", json={"thingName": n}))["id"]
                  for s, n in ((a, "a1"), (b, "b1")))
        yield {"admin": admin, "admin_id": org["adminKey"]["id"], "a": a, "b": b, "a1": a1, "b1": b1}


# ----- keys no broader than their creator


def test_a_site_admin_mints_only_keys_within_its_site(stack, tenant):
    t = tenant
    site_admin = new_key(t["admin"], ["admin"], placeIds=[t["a"]])
    with client(stack, site_admin["key"]) as api:
        assert "no resource filters" in refused(api.post("/v2/api-keys", json={"name": "x", "scopes": ["admin"]}))
        assert "no resource filters" in refused(api.post("/v2/api-keys", json={"name": "x", "scopes": ["read"]}))
        for filters in ({"placeIds": [t["b"]]}, {"placeIds": [t["a"], t["b"]]}, {"thingIds": [t["b1"]]}):
            reason = refused(api.post("/v2/api-keys", json={"name": "x", "scopes": ["read"], "filters": filters}))
            assert "outside this key's filters" in reason
        new_key(api, ["admin"], placeIds=[t["a"]])  # as broad as itself
        new_key(api, ["write"], thingIds=[t["a1"]])  # a thing registered in its site is within its reach
    # A key naming a thing does not reach the thing's place (nor that place's future things).
    thing_admin = new_key(t["admin"], ["admin"], thingIds=[t["a1"]])
    with client(stack, thing_admin["key"]) as api:
        assert "places" in refused(api.post("/v2/api-keys", json={
            "name": "x", "scopes": ["read"], "filters": {"placeIds": [t["a"]]}}))
        new_key(api, ["read"], thingIds=[t["a1"]])


def test_a_site_admin_sees_and_revokes_only_keys_within_its_site(stack, tenant):
    t = tenant
    site_admin = new_key(t["admin"], ["admin"], placeIds=[t["a"]])
    elsewhere = new_key(t["admin"], ["read"], placeIds=[t["b"]])
    within = new_key(t["admin"], ["read"], thingIds=[t["a1"]])
    with client(stack, site_admin["key"]) as api:
        listed = {k["id"] for k in created(api.get("/v2/api-keys"), 200)["items"]}
        assert within["id"] in listed and site_admin["id"] in listed
        assert not listed & {elsewhere["id"], t["admin_id"]}
        assert "no resource filters" in refused(api.delete(f"/v2/api-keys/{t['admin_id']}"))
        assert "outside this key's filters" in refused(api.delete(f"/v2/api-keys/{elsewhere['id']}"))
        assert api.delete(f"/v2/api-keys/{within['id']}").status_code == 204
    with client(stack, elsewhere["key"]) as api:
        assert api.get("/v2/orgs/current").status_code == 200  # the refused revocation changed nothing
    with client(stack, within["key"]) as api:
        assert api.get("/v2/orgs/current").status_code == 401
    listed = {k["id"] for k in created(t["admin"].get("/v2/api-keys"), 200)["items"]}
    assert {site_admin["id"], elsewhere["id"], within["id"], t["admin_id"]} <= listed  # the org admin sees all


# ----- the platform-admin key


def test_the_platform_key_is_no_org_key(stack, api, battery_type):
    """Not listed in the default org where it acts, and not revocable through the org API."""
    site, _ = battery_type
    org_admin = new_key(api, ["admin"])
    site_admin = new_key(api, ["admin"], placeIds=[site])
    platform_prefix = stack.settings.admin_key[:8]
    listed = created(api.get("/v2/api-keys"), 200)["items"]
    assert [k for k in listed if k["prefix"] == platform_prefix or keys.PLATFORM_ADMIN in k["scopes"]] == []
    for secret in (org_admin["key"], site_admin["key"]):
        with client(stack, secret) as admin:
            assert admin.get("/v2/orgs/current").json()["id"] == DEFAULT_ORG
            for key_id in ("key_platform", *(k["id"] for k in listed if k["prefix"] == platform_prefix)):
                assert admin.delete(f"/v2/api-keys/{key_id}").status_code in (403, 404)
    assert api.get("/v2/orgs/current").status_code == 200
    assert api.post("/v2/orgs", json={"name": "still platform admin"}).status_code == 201


def test_restarting_the_edge_changes_nobody_s_access(stack, api):
    """A revoked key stays revoked, the platform key cannot be revoked, and a platform key
    an older version stored in the catalog is refused before and after the restart."""
    legacy = keys.new_secret()
    legacy_id = f"key_legacy{secrets.token_hex(4)}"
    put_stored_platform_key(stack, legacy_id, legacy)
    # The edge answers a catalog write once its view applied it: so it has the record above too.
    revoked = new_key(api, ["read"])
    assert api.delete(f"/v2/api-keys/{revoked['id']}").status_code == 204
    assert api.delete("/v2/api-keys/key_platform").status_code == 404

    def access() -> dict:
        statuses = {}
        for name, secret in (("platform", stack.settings.admin_key), ("revoked", revoked["key"]),
                             ("legacy", legacy)):
            with client(stack, secret) as caller:
                statuses[name] = caller.get("/v2/orgs/current").status_code
        return statuses

    expected = {"platform": 200, "revoked": 401, "legacy": 401}
    assert access() == expected
    stack.restart("edge")
    assert access() == expected
    listed = {k["id"]: k for k in created(api.get("/v2/api-keys"), 200)["items"]}
    assert legacy_id not in listed
    stored = eventually(lambda: (body := catalog_record(stack, legacy_id)) and body.get("revoked") and body)
    assert stored["revoked"] is True  # the restart retired the stored record for every reader


def put_stored_platform_key(stack, key_id: str, secret: str) -> None:
    """A platform-admin key record as versions before this one wrote it to the catalog."""
    view = CatalogView(stack.settings.kafka_bootstrap, Topics(stack.settings.topic_prefix).catalog)
    view.start()
    writer = CatalogWriter(stack.settings.kafka_bootstrap, Topics(stack.settings.topic_prefix).catalog, view)
    try:
        assert view.wait_ready(30)
        writer.put("api_key", key_id, DEFAULT_ORG, {
            "id": key_id, "name": "platform admin", "scopes": ["admin", "write", "read", keys.PLATFORM_ADMIN],
            "filters": {"placeIds": [], "thingIds": [], "streams": []}, "hash": keys.hash_secret(secret),
            "prefix": secret[:8], "revoked": False, "createdAt": 0})
    finally:
        writer.close()
        view.stop()


def catalog_record(stack, key_id: str) -> dict | None:
    view = CatalogView(stack.settings.kafka_bootstrap, Topics(stack.settings.topic_prefix).catalog)
    view.start()
    try:
        assert view.wait_ready(30)
        return view.get("api_key", key_id)
    finally:
        view.stop()


# ----- Idempotency-Key scope: (org, API key, target)


def post(api: httpx.Client, thing: str, body: dict, idempotency_key: str) -> httpx.Response:
    return api.post(f"/v2/thing/{thing}/data", json=body, headers={"Idempotency-Key": idempotency_key, **SYNC})


def test_one_key_on_two_things_is_two_requests(api, stack, battery_type, battery):
    other = register_battery(api, *battery_type)
    key = f"reading-{secrets.token_hex(4)}"
    first, second = post(api, battery, SEED_FRAMES, key), post(api, other, SEED_FRAMES, key)
    for reply, thing in ((first, battery), (second, other)):
        assert reply.status_code == 200, reply.text
        assert reply.json()["thingId"] == thing and reply.json()["framesIngested"] == 1
        assert "Idempotent-Replayed" not in reply.headers


def test_a_reused_key_with_another_body_is_422_and_never_processed(api, stack, battery):
    key = f"sale-{secrets.token_hex(4)}"
    first = post(api, battery, SEED_FRAMES, key)
    assert first.status_code == 200
    again = post(api, battery, SEED_FRAMES, key)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["thingId"] == battery and again.json()["framesIngested"] == 1
    changed = {"frames": [{"timestamp": 1718884800000, "metrics": {"moduleSoC": 11.0}}]}
    reused = post(api, battery, changed, key)
    assert reused.status_code == 422, reused.text
    error = reused.json()["error"]
    assert error["code"] == "IDEMPOTENCY_KEY_REUSED" and "different body" in error["message"]
    assert first.json()["requestId"] in error["message"] and "Idempotent-Replayed" not in reused.headers
    logged = eventually(lambda: (r := api.get(f"/v2/ingest-log/{reused.headers['X-Request-Id']}")).status_code
                        == 200 and r.json())
    assert logged["status"] == "rejected" and logged["httpStatus"] == 422 and logged["framesIngested"] == 0
    assert logged["errors"][0]["code"] == "IDEMPOTENCY_KEY_REUSED"
    # Frames of one thing share a partition: once a marker sent last is in, the rest would be too.
    marker = {"frames": [{"timestamp": 1, "metrics": {"status": 0}}]}
    assert api.post(f"/v2/thing/{battery}/data", json=marker, headers=SYNC).status_code == 200
    eventually(lambda: sql(api, stack, f"SELECT count() FROM {{db}}.readings WHERE thing_id = '{battery}' "
                                       "AND ts = fromUnixTimestamp64Milli(1)") == [[1]])
    values = sql(api, stack, f"SELECT DISTINCT value FROM {{db}}.readings WHERE thing_id = '{battery}' "
                             "AND ts = fromUnixTimestamp64Milli(1718884800000) AND value IN (11, 87.4)")
    assert values == [[87.4]]


def sql(api: httpx.Client, stack, query: str) -> list:
    reply = api.post("/v2/admin/sql", json={"sql": query.format(db=stack.settings.database)})
    assert reply.status_code == 200, reply.text
    return reply.json()["rows"]


def test_two_api_keys_of_one_org_have_their_own_idempotency_keys(api, stack, battery):
    """Two devices that pick the same key (say, a counter) must not swallow each other's data."""
    key = f"counter-{secrets.token_hex(4)}"
    mine = post(api, battery, SEED_FRAMES, key)
    with client(stack, new_key(api, ["write"])["key"]) as device:
        theirs = post(device, battery, SEED_FRAMES, key)
        repeat = post(device, battery, SEED_FRAMES, key)
    assert mine.status_code == theirs.status_code == 200
    assert "Idempotent-Replayed" not in mine.headers and "Idempotent-Replayed" not in theirs.headers
    assert repeat.headers["Idempotent-Replayed"] == "true"  # each key still has its own repeats
