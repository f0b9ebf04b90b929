"""Seed 003's harbor pushes on the real stack: single and batch points become readings
(ClickHouse, latest-event), closed harbors name what they refuse, bad fields are
named, repeats are not stored twice, other orgs see nothing, and two processors
seeing a new ship at once create it once."""

from __future__ import annotations

import threading
import time
import zlib

import httpx
import orjson
import pytest
from confluent_kafka.admin import AdminClient

import schemas
from catalog.access import DEFAULT_ORG
from catalog.view import CatalogView
from catalog.writer import CatalogWriter
from processors.rulebooks import judge
from tests.conftest import eventually, session_settings

SYNC = {"Prefer": "wait=15"}
# The seed's data structure: time (ISO 8601), ship_id, cargo_id, value.
SEED_POINT = {"time": "2024-06-20T12:00:00Z", "ship_id": "Truck1", "cargo_id": "temperature", "value": 21.5}
SEED_BATCH = [
    {"time": "2024-06-20T12:01:00Z", "ship_id": "Truck1", "cargo_id": "temperature", "value": 22.0},
    {"time": "2024-06-20T12:01:00Z", "ship_id": "Truck1", "cargo_id": "speed", "value": 61.25},
    {"time": "2024-06-20T12:01:00Z", "ship_id": "Truck2", "cargo_id": "temperature", "value": 19.0},
]


def push(client, harbor, body, headers=None, batch=False):
    path = f"/api/v1/ingest/ingest/{harbor}" + ("/batch" if batch else "")
    return client.post(path, json=body, headers=headers or {})


def harbor_of(client, auto: bool) -> str:
    reply = client.post("/v2/harbors", json={"name": "Port of tests", "autoProvision": auto})
    assert reply.status_code == 201, reply.text
    assert reply.json()["id"].startswith("hbr_") and reply.json()["autoProvision"] is auto
    return reply.json()["id"]


def ships(client, harbor) -> dict[str, str]:
    return {s["shipId"]: s["id"] for s in client.get(f"/v2/harbors/{harbor}/ships").json()["items"]}


def rows(api, stack, sql: str) -> list:
    reply = api.post("/v2/admin/sql", json={"sql": sql.format(db=stack.settings.database)})
    assert reply.status_code == 200, reply.text
    return reply.json()["rows"]


READINGS = ("SELECT m.name, toUnixTimestamp64Milli(r.ts), r.value FROM {db}.readings AS r "
            "JOIN (SELECT * FROM {db}.metric_definitions ORDER BY updated_at DESC LIMIT 1 BY org_id, metric_id) AS m "
            "USING (org_id, metric_id) WHERE r.thing_id = '%s' "
            "ORDER BY r.ts, m.name, r.version DESC LIMIT 1 BY r.metric_id, r.ts")


def test_single_and_batch_pushes_become_readings(api, stack):
    harbor = harbor_of(api, auto=True)
    single = push(api, harbor, SEED_POINT)
    assert single.status_code == 202, single.text
    assert single.json() == {"requestId": single.headers["X-Request-Id"], "harborId": harbor, "status": "accepted",
                             "points": 1}
    batch = push(api, harbor, SEED_BATCH, SYNC, batch=True)
    assert batch.status_code == 200, batch.text
    assert batch.json() == {"requestId": batch.headers["X-Request-Id"], "harborId": harbor, "status": "ingested",
                            "points": 3, "cargos": ["temperature", "speed"]}
    known = eventually(lambda: len(s := ships(api, harbor)) == 2 and s)
    truck1, truck2 = known["Truck1"], known["Truck2"]
    assert api.get(f"/v2/things/{truck1}").json()["placeId"] == harbor

    expected = [["temperature", 1718884800000, 21.5], ["speed", 1718884860000, 61.25],
                ["temperature", 1718884860000, 22.0]]
    eventually(lambda: rows(api, stack, READINGS % truck1) == expected)
    eventually(lambda: rows(api, stack, READINGS % truck2) == [["temperature", 1718884860000, 19.0]])
    latest = api.get(f"/v2/things/{truck1}/latest-event")
    assert latest.status_code == 200
    assert latest.json()["metrics"] == {"speed": 61.25, "temperature": 22.0}


def test_a_closed_harbor_refuses_unknown_ships_and_cargos_naming_them(api):
    harbor = harbor_of(api, auto=False)
    reply = push(api, harbor, SEED_POINT, SYNC)
    assert reply.status_code == 400
    assert {k: reply.json()[k] for k in ("code", "field")} == {"code": "UNKNOWN_SHIP", "field": "ship_id"}
    assert "'Truck1'" in reply.json()["detail"] and reply.json()["requestId"] == reply.headers["X-Request-Id"]
    assert api.post(f"/v2/harbors/{harbor}/ships", json={"shipId": "Truck1"}).status_code == 201
    reply = push(api, harbor, [SEED_POINT, {**SEED_POINT, "cargo_id": "rpm"}], SYNC, batch=True)
    assert reply.status_code == 400 and reply.json()["code"] == "UNKNOWN_CARGO"
    assert reply.json()["field"] == "[0].cargo_id" and "'temperature'" in reply.json()["detail"]
    for cargo in ("temperature", "rpm"):
        assert api.post(f"/v2/harbors/{harbor}/cargos", json={"cargoId": cargo}).status_code == 201
    assert push(api, harbor, [SEED_POINT, {**SEED_POINT, "cargo_id": "rpm"}], SYNC, batch=True).status_code == 200
    assert list(ships(api, harbor)) == ["Truck1"]  # nothing was provisioned


@pytest.mark.parametrize("body,batch,code,field", [
    ({**SEED_POINT, "time": "20/06/2024 12:00"}, False, "INVALID_TIMESTAMP", "time"),
    ([SEED_POINT, {**SEED_POINT, "time": 1718884800}], True, "INVALID_TIMESTAMP", "[1].time"),
    ({**SEED_POINT, "value": "warm"}, False, "INVALID_VALUE", "value"),
    ([SEED_POINT, SEED_POINT, {**SEED_POINT, "value": None}], True, "INVALID_VALUE", "[2].value"),
])
def test_bad_time_or_value_is_answered_with_the_field(api, body, batch, code, field):
    harbor = harbor_of(api, auto=True)
    reply = push(api, harbor, body, SYNC, batch=batch)
    assert reply.status_code == 400, reply.text
    assert (reply.json()["code"], reply.json()["field"]) == (code, field)
    assert ships(api, harbor) == {}  # a request is judged whole: nothing provisioned either


def test_malformed_bodies_are_answered_at_once(api):
    harbor = harbor_of(api, auto=True)
    for body, batch in ((b'{"time":', False), (b"[]", True), (b"[1]", False)):
        reply = api.post(f"/api/v1/ingest/ingest/{harbor}" + ("/batch" if batch else ""), content=body,
                         headers={"Content-Type": "application/json"})  # async: the edge answers alone
        assert reply.status_code == 400 and reply.json()["code"] == "INVALID_PAYLOAD"
        assert reply.json()["field"] == "body"


def test_shared_refusals_speak_the_dialect_too(stack):
    with httpx.Client(base_url=stack.url, timeout=30) as anonymous:
        reply = push(anonymous, "hbr_x", SEED_POINT)
    assert reply.status_code == 401
    assert reply.json() == {"detail": reply.json()["detail"], "code": "UNAUTHORIZED", "field": None}


def test_an_idempotent_repeat_is_not_stored_twice(api, stack):
    harbor = harbor_of(api, auto=True)
    key = {"Idempotency-Key": f"push-{harbor}", **SYNC}
    first = push(api, harbor, SEED_BATCH, key, batch=True)
    again = push(api, harbor, SEED_BATCH, key, batch=True)
    assert first.status_code == again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    changed = push(api, harbor, [{**SEED_BATCH[0], "value": 99.0}], key, batch=True)
    assert changed.status_code == 422 and changed.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    truck1 = ships(api, harbor)["Truck1"]
    physical = f"SELECT count(), max(value) FROM {{db}}.readings WHERE thing_id = '{truck1}'"
    eventually(lambda: rows(api, stack, physical) == [[2, 61.25]])
    time.sleep(1)  # a reprocessed repeat would have landed by now (the sink flushes every 200 ms)
    assert rows(api, stack, physical) == [[2, 61.25]]  # physical rows: no second copy, not even unmerged


def test_another_orgs_harbor_is_404(api, stack):
    harbor = harbor_of(api, auto=True)
    tenant = api.post("/v2/orgs", json={"name": f"tenant of {harbor}"}).json()["adminKey"]["key"]
    with httpx.Client(base_url=stack.url, headers={"X-API-Key": tenant}, timeout=30) as other:
        reply = push(other, harbor, SEED_POINT, SYNC)
        assert reply.status_code == 404 and reply.json()["code"] == "HARBOR_NOT_FOUND"
        assert other.get(f"/v2/harbors/{harbor}").status_code == 404
        assert other.get("/v2/harbors").json()["items"] == []
    assert ships(api, harbor) == {}


def test_key_filters_reach_a_harbor_through_its_place_id(api, stack):
    harbor, elsewhere = harbor_of(api, auto=True), harbor_of(api, auto=True)
    secret = api.post("/v2/api-keys", json={"name": "harbor writer", "scopes": ["write"],
                                            "filters": {"placeIds": [harbor]}}).json()["key"]
    with httpx.Client(base_url=stack.url, headers={"X-API-Key": secret}, timeout=30) as writer:
        assert push(writer, harbor, SEED_POINT, SYNC).status_code == 200
        ship = ships(writer, harbor)["Truck1"]
        assert writer.get(f"/v2/things/{ship}").status_code == 200  # a harbor's ships are in its reach
        refused = push(writer, elsewhere, SEED_POINT)
        assert refused.status_code == 403 and refused.json()["code"] == "FORBIDDEN"


def test_a_sync_push_reads_its_own_new_ships_at_once(api):
    """Read-your-writes: the 200 comes after the edge's catalog has the ships the push created."""
    harbor = harbor_of(api, auto=True)
    for n in range(8):
        point = {**SEED_POINT, "ship_id": f"Sync{n}"}
        assert push(api, harbor, point, SYNC).status_code == 200
        assert f"Sync{n}" in ships(api, harbor)  # no retry: the listing must already hold it


# ----- provisioning races: two processors see the same new ship at once


@pytest.fixture(scope="module")
def two_processors(kafka_bootstrap, tmp_path_factory):
    """A stack of its own with a second processor in the consumer group."""
    from sluice.stack import Stack

    stack = Stack(session_settings(kafka_bootstrap, tmp_path_factory.mktemp("harbor-race"), rate_limit=0.0))
    stack.start()
    try:
        stack.add("processor", "processor-2")
        stack._wait_ready(time.monotonic() + 60)
        with httpx.Client(base_url=stack.url, headers={"X-Api-Key": stack.settings.admin_key}, timeout=30) as api:
            yield stack, api
    finally:
        stack.stop()


def group_members(stack) -> list[set[int]]:
    """The raw partitions each processor of the group owns."""
    admin = AdminClient({"bootstrap.servers": stack.settings.kafka_bootstrap})
    group = f"{stack.settings.topic_prefix}processors"
    described = admin.describe_consumer_groups([group])[group].result(10)
    raw = f"{stack.settings.topic_prefix}raw"
    return [{tp.partition for tp in m.assignment.topic_partitions if tp.topic == raw} for m in described.members]


SHIPS = 50


def test_concurrent_first_sightings_create_each_ship_and_the_cargo_once(two_processors):
    """Eight requests at once, two on each raw partition, each naming the same 50 new ships
    and one new cargo: both processors provision them (in practice both write most of
    them: the catalog topic holds two records of each), and one of each exists."""
    stack, api = two_processors
    # Both processors hold raw partitions; the requests below go to every partition.
    eventually(lambda: (owned := group_members(stack)) and len(owned) == 2 and all(owned) and owned, timeout=60)
    harbor = harbor_of(api, auto=True)
    keys = {}
    for n in range(1000):  # Idempotency-Keys that place two requests on each partition (librdkafka: CRC32)
        key = f"first-sight-{n}"
        keys.setdefault(zlib.crc32(f"{harbor}/{key}".encode()) % stack.settings.partitions, []).append(key)
    chosen = [key for found in keys.values() for key in found[:2]]
    assert len(chosen) == 2 * stack.settings.partitions
    replies: list[int] = []
    start = threading.Barrier(len(chosen))

    def send(i: int, key: str) -> None:
        with httpx.Client(base_url=stack.url, headers={"X-API-Key": stack.settings.admin_key}, timeout=30) as c:
            start.wait()
            points = [{"time": f"2024-06-20T12:00:{i:02d}Z", "ship_id": f"Vessel {n}", "cargo_id": "draft", "value": i}
                      for n in range(SHIPS)]
            replies.append(push(c, harbor, points, {"Idempotency-Key": key, **SYNC}, batch=True).status_code)

    threads = [threading.Thread(target=send, args=(i, key)) for i, key in enumerate(chosen)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert replies == [200] * len(chosen)
    vessels = ships(api, harbor)
    assert sorted(vessels) == sorted(f"Vessel {n}" for n in range(SHIPS))
    assert [c["cargoId"] for c in api.get(f"/v2/harbors/{harbor}/cargos").json()["items"]] == ["draft"]
    vessel = vessels["Vessel 0"]
    # Every reading is on the one thing; the warehouse's catalog mirror has one ship and one cargo too.
    eventually(lambda: rows(api, stack, f"SELECT count(DISTINCT ts) FROM {{db}}.readings "
                                        f"WHERE thing_id = '{vessel}'") == [[len(chosen)]])
    eventually(lambda: rows(api, stack, f"SELECT uniqExact(thing_id) FROM {{db}}.things "
                                        f"WHERE place_id = '{harbor}'") == [[SHIPS]])
    eventually(lambda: rows(api, stack, "SELECT uniqExact(metric_id) FROM {db}.metric_definitions "
                                        "WHERE name = 'draft'") == [[1]])
    assert api.get(f"/v2/things/{vessel}/latest-event").json()["metrics"] == {"draft": float(len(chosen) - 1)}


def test_an_interleaved_race_writes_one_entity(api, stack):
    """The race the derived ids are for, interleaved on purpose: two processors (a view and a
    writer each) both judge a request naming a new ship and cargo before either wrote them,
    then both write what they decided."""
    topics = schemas.Topics(stack.settings.topic_prefix)
    harbor = harbor_of(api, auto=True)
    views = [CatalogView(stack.settings.kafka_bootstrap, topics.catalog) for _ in range(2)]
    writers = [CatalogWriter(stack.settings.kafka_bootstrap, topics.catalog, view) for view in views]
    try:
        for view in views:
            view.start()
            assert view.wait_ready(30)
            eventually(lambda: view.get("place", harbor, DEFAULT_ORG))
        outcomes = [judge({"request_id": f"req_race{i}", "org_id": DEFAULT_ORG, "key_id": "key_platform",
                           "route": "harbor_points", "stream": harbor, "received_at": 1718884800000 + i,
                           "body": orjson.dumps([SEED_POINT])}, view) for i, view in enumerate(views)]
        decided = [[(e["kind"], e["id"]) for e in outcome.catalog] for outcome in outcomes]
        assert len(decided[0]) == 2 and decided[0] == decided[1]  # both saw a new ship and a new cargo
        for writer, outcome in zip(writers, outcomes):
            for e in outcome.catalog:
                writer.put(e["kind"], e["id"], e["org_id"], e["body"])
    finally:
        for writer, view in zip(writers, views):
            writer.close()
            view.stop()
    assert eventually(lambda: ships(api, harbor)) == {"Truck1": decided[0][0][1]}
    cargos = api.get(f"/v2/harbors/{harbor}/cargos").json()["items"]
    assert [(c["cargoId"], c["id"]) for c in cargos] == [("temperature", decided[0][1][1])]
