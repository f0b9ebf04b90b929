"""Integrations (seed 001) on the real stack: the catalog routes, secrets shown once, org
isolation, and the signed webhook: a good signature lands its readings in ClickHouse; a
wrong secret, a stale time and a replayed request (also after the edge restarted) are 401 and
land nothing; an unmapped
device is a dead letter that `sluice replay` lands once its mapping is added."""

from __future__ import annotations

import gzip
import secrets
import time

import httpx
import orjson
import pytest

from producers.edge.content_coding import zstd
from producers.edge.webhook_signature import header_value
from sluice.replay import replay_dead_letters
from tests.conftest import eventually
from tests.seed import org_with_every_target


def ok(reply: httpx.Response, status: int = 200) -> dict:
    assert reply.status_code == status, reply.text
    return reply.json() if reply.content else {}


@pytest.fixture(scope="module")
def org(stack) -> dict:
    return org_with_every_target(stack.url, stack.settings.admin_key, "integrations")


@pytest.fixture()
def client(stack, org):
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": org["key"]}, timeout=30) as api:
        yield api
    stack.check_alive()


def webhook(client, org, things: dict | None = None) -> dict:
    return ok(client.post("/v2/integrations", json={
        "name": f"vendor {secrets.token_hex(3)}", "kind": "webhook", "templateId": org["template"],
        "resource": {"from": "record", "expression": "device"},
        "things": {"dev-1": org["thing"]} if things is None else things}), 201)


def send(stack, integration_id: str, body: bytes, signature: str) -> httpx.Response:
    return httpx.post(f"{stack.url}/v2/integrations/{integration_id}/webhook", content=body, timeout=30,
                      headers={"Content-Type": "application/json", "X-Sluice-Signature": signature})


def landed(stack, thing: str, ts: list[int]) -> list:
    """(ts, value) of the thing's readings at `ts`, as ClickHouse holds them."""
    query = (f"SELECT toUnixTimestamp64Milli(ts), value FROM {stack.settings.database}.readings FINAL "
             f"WHERE thing_id = '{thing}' AND toUnixTimestamp64Milli(ts) IN ({','.join(map(str, ts))}) ORDER BY ts")
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": stack.settings.admin_key}, timeout=30) as root:
        return ok(root.post("/v2/admin/sql", json={"sql": query}))["rows"]


def body_at(ts: int, device: str = "dev-1", value: float = 1.5) -> bytes:
    return orjson.dumps({"samples": [{"device": device, "t": ts, "v": value}]})


def test_an_integration_is_a_catalog_entity_whose_secret_is_shown_once(client, org):
    created = webhook(client, org)
    assert created["id"].startswith("intg_") and created["secret"].startswith("whsec_")
    assert created["secretsSet"] == ["secret"] and created["paused"] is False
    shown = ok(client.get(f"/v2/integrations/{created['id']}"))
    assert "secret" not in shown and "secrets" not in shown and shown["secretsSet"] == ["secret"]
    assert shown == {k: v for k, v in created.items() if k != "secret"}
    assert created["id"] in [i["id"] for i in ok(client.get("/v2/integrations", params={"limit": 1000}))["items"]]
    renamed = ok(client.patch(f"/v2/integrations/{created['id']}", json={"name": "renamed"}))
    assert renamed["name"] == "renamed" and "secret" not in renamed
    assert ok(client.post(f"/v2/integrations/{created['id']}/pause"))["paused"] is True
    assert ok(client.get(f"/v2/integrations/{created['id']}/status"))["state"] == "paused"
    assert ok(client.post(f"/v2/integrations/{created['id']}/resume"))["paused"] is False
    assert ok(client.get(f"/v2/integrations/{created['id']}/status"))["state"] == "receiving"
    ok(client.delete(f"/v2/integrations/{created['id']}"), 204)
    assert client.get(f"/v2/integrations/{created['id']}").status_code == 404
    assert client.get(f"/v2/integrations/{created['id']}/status").status_code == 404


def test_an_mqtt_password_is_never_shown(client, org):
    created = ok(client.post("/v2/integrations", json={
        "name": "plant", "kind": "mqtt", "templateId": org["template"],
        "config": {"url": "mqtt://127.0.0.1:1883", "topics": ["plant/+/telemetry"], "username": "u",
                   "password": "hunter2"},
        "resource": {"from": "message", "expression": "topicLevels[1]"}}), 201)
    assert "hunter2" not in orjson.dumps(created).decode() and created["secretsSet"] == ["password"]
    # A new config without the password keeps it.
    patched = ok(client.patch(f"/v2/integrations/{created['id']}", json={"config": {
        "url": "mqtt://127.0.0.1:1884", "topics": ["plant/#"]}}))
    assert patched["secretsSet"] == ["password"] and patched["config"]["url"].endswith(":1884")
    assert "hunter2" not in client.get(f"/v2/integrations/{created['id']}").text


def test_bad_integrations_are_refused_naming_the_field(client, org):
    base = {"name": "x", "kind": "webhook", "templateId": org["template"],
            "resource": {"from": "record", "expression": "device"}}
    refused = client.post("/v2/integrations", json={**base, "templateId": "tmpl_nope"})
    assert refused.status_code == 404 and refused.json()["error"]["details"]["field"] == "templateId"
    refused = client.post("/v2/integrations", json={**base, "resource": {"from": "record", "expression": "a[?"}})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "INVALID_EXPRESSION"
    refused = client.post("/v2/integrations", json={**base, "things": {"d": "thg_nope"}})
    assert refused.status_code == 404 and refused.json()["error"]["details"]["field"] == "things.d"
    assert client.post("/v2/integrations", json={**base, "kind": "carrier-pigeon"}).status_code == 400
    garbled = {"url": "mqtts://127.0.0.1:8883", "topics": ["plant/#"],
               "caCertificate": "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"}
    refused = client.post("/v2/integrations", json={**base, "kind": "mqtt", "config": garbled})
    assert refused.status_code == 400 and "caCertificate" in refused.text and "PEM" in refused.text, refused.text
    garbled["caCertificate"] = "\u00d4\u00bb-----BEGIN CERTIFICATE-----"  # not ASCII: schemathesis found a 500 here
    refused = client.post("/v2/integrations", json={**base, "kind": "mqtt", "config": garbled})
    assert refused.status_code == 400 and "caCertificate" in refused.text and "ASCII" in refused.text, refused.text


def test_another_orgs_integration_is_not_found(stack, client, org):
    mine = webhook(client, org)
    other = org_with_every_target(stack.url, stack.settings.admin_key, "other")
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": other["key"]}, timeout=30) as them:
        path = f"/v2/integrations/{mine['id']}"
        assert them.get(path).status_code == 404
        assert them.patch(path, json={"name": "mine now"}).status_code == 404
        assert them.put(f"{path}/things/x", json={"thingId": other["thing"]}).status_code == 404
        assert them.post(f"{path}/pause").status_code == 404
        assert them.delete(path).status_code == 404
        assert mine["id"] not in [i["id"] for i in them.get("/v2/integrations").json()["items"]]
        # Nor may one map its external ids to another org's things.
        theirs = ok(them.post("/v2/integrations", json={
            "name": "x", "kind": "webhook", "templateId": other["template"],
            "resource": {"from": "record", "expression": "device"}}), 201)
        assert them.put(f"/v2/integrations/{theirs['id']}/things/x",
                        json={"thingId": org["thing"]}).status_code == 404
    assert ok(client.get(path))["name"] == mine["name"]


def test_a_signed_webhook_lands_and_a_bad_stale_or_replayed_one_does_not(stack, client, org):
    integration = webhook(client, org)
    secret, base = integration["secret"], 1_718_900_000_000 + secrets.randbelow(10**9)
    good = body_at(base)
    now = int(time.time())
    signature = header_value(secret, now, good)
    reply = send(stack, integration["id"], good, signature)
    assert reply.status_code == 202, reply.text
    assert reply.json()["requestId"].startswith("req_")
    assert eventually(lambda: landed(stack, org["thing"], [base])) == [[base, 1.5]]

    refusals = {
        "mismatch": (body_at(base + 1), header_value("whsec_wrong", now, body_at(base + 1))),
        "stale": (body_at(base + 2), header_value(secret, now - 301, body_at(base + 2))),
        "replayed": (good, signature),
        "malformed": (body_at(base + 3), "v1=deadbeef"),
    }
    for reason, (body, header) in refusals.items():
        reply = send(stack, integration["id"], body, header)
        assert reply.status_code == 401, (reason, reply.text)
        assert reply.json()["error"]["details"]["reason"] == reason
    # A fresh request after them lands; the refused ones never did.
    later = body_at(base + 4)
    assert send(stack, integration["id"], later, header_value(secret, int(time.time()), later)).status_code == 202
    eventually(lambda: landed(stack, org["thing"], [base + 4]))
    assert landed(stack, org["thing"], [base + 1, base + 2, base + 3]) == []
    assert send(stack, "intg_nope", good, signature).status_code == 404


def copies(stack, thing: str, ts: int) -> int:
    """Rows the readings table holds of the thing at `ts`, before merges fold replaced ones."""
    query = (f"SELECT count() FROM {stack.settings.database}.readings WHERE thing_id = '{thing}' "
             f"AND toUnixTimestamp64Milli(ts) = {ts}")
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": stack.settings.admin_key}, timeout=30) as root:
        return ok(root.post("/v2/admin/sql", json={"sql": query}))["rows"][0][0]


def test_a_replay_is_refused_by_a_restarted_edge_and_lands_once(stack, client, org):
    integration = webhook(client, org)
    base = 1_718_600_000_000 + secrets.randbelow(10**9)
    body = body_at(base)
    header = header_value(integration["secret"], int(time.time()), body)
    assert send(stack, integration["id"], body, header).status_code == 202
    assert eventually(lambda: landed(stack, org["thing"], [base])) == [[base, 1.5]]

    stack.restart("edge")  # it remembers nothing in memory: the processors' idempotency topic does
    reply = send(stack, integration["id"], body, header)
    assert reply.status_code == 401 and reply.json()["error"]["details"]["reason"] == "replayed", reply.text
    later = body_at(base + 1)
    assert send(stack, integration["id"], later,
                header_value(integration["secret"], int(time.time()), later)).status_code == 202
    eventually(lambda: landed(stack, org["thing"], [base + 1]))
    assert copies(stack, org["thing"], base) == 1


def test_a_webhook_takes_the_ingest_body_limit_and_compressed_bodies(stack, client, org):
    integration = webhook(client, org)
    limit, api_limit = stack.settings.max_body_bytes, stack.settings.max_api_body_bytes
    base = 1_718_500_000_000 + secrets.randbelow(10**9)

    def signed(body: bytes, **headers: str) -> dict:
        return {"Content-Type": "application/json", **headers,
                "X-Sluice-Signature": header_value(integration["secret"], int(time.time()), body)}

    def padded(ts: int, size: int) -> bytes:
        body = orjson.loads(body_at(ts))
        return orjson.dumps({**body, "note": "x" * (size - len(orjson.dumps({**body, "note": ""})))})

    url = f"{stack.url}/v2/integrations/{integration['id']}/webhook"
    large = padded(base, 4 * api_limit)  # past the API's limit, within the ingest routes'
    assert httpx.post(url, content=large, headers=signed(large), timeout=30).status_code == 202
    # The signature is over the JSON as it is once its coding is undone.
    for n, (coding, compress) in enumerate({"gzip": gzip.compress, "zstd": zstd.compress}.items(), start=1):
        body = padded(base + n, limit)  # the largest body there is, inflated
        reply = httpx.post(url, content=compress(body), headers=signed(body, **{"Content-Encoding": coding}),
                           timeout=30)
        assert reply.status_code == 202, (coding, reply.text)
    eventually(lambda: len(landed(stack, org["thing"], [base, base + 1, base + 2])) == 3)

    over = padded(base + 3, limit + 1)
    for content, headers in [(over, signed(over)),
                             (zstd.compress(over), signed(over, **{"Content-Encoding": "zstd"}))]:
        reply = httpx.post(url, content=content, headers=headers, timeout=30)
        assert reply.status_code == 413 and reply.json()["error"]["details"]["limit"] == limit, reply.text
    assert landed(stack, org["thing"], [base + 3]) == []


def test_an_unknown_device_registers_a_thing_in_the_place_and_its_reading_lands_there(stack, client, org):
    auto = {"placeId": org["site"], "thingTypeId": org["type"]}
    base = {"name": "self-registering", "kind": "webhook", "templateId": org["template"],
            "resource": {"from": "record", "expression": "device"}}
    refused = client.post("/v2/integrations", json={**base, "autoRegister": {**auto, "placeId": org["harbor"]}})
    assert refused.status_code == 404 and refused.json()["error"]["details"]["field"] == "autoRegister.placeId"
    refused = client.post("/v2/integrations", json={**base, "autoRegister": {**auto, "thingTypeId": "tdefi_nope"}})
    assert refused.status_code == 404 and refused.json()["error"]["details"]["field"] == "autoRegister.thingTypeId"
    integration = ok(client.post("/v2/integrations", json={**base, "autoRegister": auto}), 201)
    assert integration["autoRegister"] == auto

    ts = 1_718_400_000_000 + secrets.randbelow(10**9)
    device = f"dev-{secrets.token_hex(3)}"
    body = body_at(ts, device=device, value=4.5)
    reply = send(stack, integration["id"], body, header_value(integration["secret"], int(time.time()), body))
    assert reply.status_code == 202, reply.text
    def registered() -> list[dict]:
        things = ok(client.get(f"/v2/sites/{org['site']}/things", params={"limit": 1000}))["items"]
        return [t for t in things if t["thingName"] == device]

    [thing] = eventually(registered)
    assert (thing["placeId"], thing["thingTypeId"], thing["externalId"]) == (org["site"], org["type"], device)
    thing_id = thing["id"]
    assert eventually(lambda: landed(stack, thing_id, [ts])) == [[ts, 4.5]]
    # Seen again, the device's readings land on the same thing; turned off, a new device is unmapped.
    later = body_at(ts + 1, device=device, value=5.5)
    assert send(stack, integration["id"], later,
                header_value(integration["secret"], int(time.time()), later)).status_code == 202
    assert eventually(lambda: landed(stack, thing_id, [ts + 1])) == [[ts + 1, 5.5]]
    ok(client.patch(f"/v2/integrations/{integration['id']}", json={"autoRegister": None}))
    other = body_at(ts + 2, device=f"{device}-b")
    request_id = send(stack, integration["id"], other,
                      header_value(integration["secret"], int(time.time()), other)).json()["requestId"]
    rejects = f"SELECT reason FROM {stack.settings.database}.rejects WHERE request_id = '{request_id}'"
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": stack.settings.admin_key}, timeout=30) as root:
        assert eventually(lambda: ok(root.post("/v2/admin/sql", json={"sql": rejects}))["rows"]) == [
            ["UNMAPPED_RESOURCE"]]


def test_many_mappings_at_once_and_the_readings_an_integration_wrote(stack, client, org):
    integration = webhook(client, org, things={"old": org["thing"]})
    path = f"/v2/integrations/{integration['id']}/things"
    assert ok(client.put(path, json={"a": org["thing"], "b": org["thing"]}))["things"] == {
        "a": org["thing"], "b": org["thing"]}
    assert ok(client.patch(path, json={"a": None, "c": org["thing"]}, headers={
        "Content-Type": "application/merge-patch+json"}))["things"] == {"b": org["thing"], "c": org["thing"]}
    refused = client.patch(path, json={"b": None, "d": "thg_nope"})
    assert refused.status_code == 404 and refused.json()["error"]["details"]["field"] == "things.d"
    assert ok(client.get(f"/v2/integrations/{integration['id']}"))["things"] == {"b": org["thing"], "c": org["thing"]}
    # The most an integration maps fits one request (past the API's 64 KiB body limit).
    assert len(ok(client.put(path, json={f"device-{n:05}": org["thing"] for n in range(5000)}))["things"]) == 5000
    refused = client.put(path, json={f"d{n}": org["thing"] for n in range(5001)})
    assert refused.status_code == 400, refused.text
    ok(client.put(path, json={"b": org["thing"], "c": org["thing"]}))

    status = ok(client.get(f"/v2/integrations/{integration['id']}/status"))
    assert (status["messagesProcessed"], status["readingsOut"], status["lagSeconds"]) == (0, 0, None)
    base = 1_718_300_000_000 + secrets.randbelow(10**9)
    body = orjson.dumps({"samples": [{"device": "b", "t": base, "v": 1.0}, {"device": "c", "t": base + 1, "v": 2.0},
                                     {"device": "nobody", "t": base + 2, "v": 3.0}]})
    header = header_value(integration["secret"], int(time.time()), body)
    assert send(stack, integration["id"], body, header).status_code == 202
    status = eventually(lambda: (s := ok(client.get(f"/v2/integrations/{integration['id']}/status")))
                        ["messagesProcessed"] and s)
    # A webhook has no stage reporting what it made durable: its lag is not known.
    assert (status["messagesProcessed"], status["readingsOut"], status["metricValuesOut"], status["lagSeconds"]) == (
        1, 2, 2, None)


def test_a_paused_webhook_refuses_and_a_resumed_one_accepts(stack, client, org):
    integration = webhook(client, org)
    ok(client.post(f"/v2/integrations/{integration['id']}/pause"))
    body = body_at(1_718_800_000_000)
    header = header_value(integration["secret"], int(time.time()), body)
    reply = send(stack, integration["id"], body, header)
    assert reply.status_code == 409 and reply.json()["error"]["code"] == "INTEGRATION_PAUSED"
    ok(client.post(f"/v2/integrations/{integration['id']}/resume"))
    assert send(stack, integration["id"], body, header).status_code == 202  # the refusal did not use it up


def test_an_unmapped_device_is_dead_lettered_then_replayed_once_mapped(stack, client, org):
    integration = webhook(client, org, things={})
    base = 1_718_700_000_000 + secrets.randbelow(10**9)
    body = orjson.dumps({"samples": [{"device": "dev-new", "t": base, "v": 7.0},
                                     {"device": "dev-new", "t": base + 1, "v": 8.0}]})
    reply = send(stack, integration["id"], body, header_value(integration["secret"], int(time.time()), body))
    assert reply.status_code == 202, reply.text
    request_id = reply.json()["requestId"]
    rejects = (f"SELECT reason FROM {stack.settings.database}.rejects WHERE request_id = '{request_id}'")
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": stack.settings.admin_key}, timeout=30) as root:
        assert eventually(lambda: ok(root.post("/v2/admin/sql", json={"sql": rejects}))["rows"]) == [
            ["UNMAPPED_RESOURCE"]]
    assert landed(stack, org["thing"], [base, base + 1]) == []

    ok(client.put(f"/v2/integrations/{integration['id']}/things/dev-new", json={"thingId": org["thing"]}))
    assert ok(client.get(f"/v2/integrations/{integration['id']}"))["things"] == {"dev-new": org["thing"]}
    assert replay_dead_letters(stack.settings.kafka_bootstrap, stack.settings, reason="UNMAPPED_RESOURCE",
                               request_id=request_id) == (1, 1)
    assert eventually(lambda: landed(stack, org["thing"], [base, base + 1])) == [[base, 7.0], [base + 1, 8.0]]
    ok(client.delete(f"/v2/integrations/{integration['id']}/things/dev-new"), 204)
    assert client.delete(f"/v2/integrations/{integration['id']}/things/dev-new").status_code == 404
