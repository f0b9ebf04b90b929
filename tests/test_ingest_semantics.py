"""`POST /v2/thing/{thingId}/data` as seeds 001 and 002 specify it: sync and async
replies, the validation table, idempotency, and limits — on the real stack."""

from __future__ import annotations

import asyncio
import select
import socket
import time

import httpx
import pytest

from producers.edge.raw_producer import ProducerUnavailable, RawProducer
from tests.conftest import eventually, session_settings
from tests.kafka_fixture import free_port
from tests.seed import SEED_FRAMES, register_battery, register_battery_type

SYNC = {"Prefer": "wait=10"}


def post(api, thing, body, headers=None, **params):
    return api.post(f"/v2/thing/{thing}/data", json=body, headers=headers or {}, params=params)


def rows(api, stack, sql: str) -> list:
    reply = api.post("/v2/admin/sql", json={"sql": sql.format(db=stack.settings.database)})
    assert reply.status_code == 200, reply.text
    return reply.json()["rows"]


def settle(api, stack, thing) -> None:
    """Wait until everything sent for `thing` so far is queryable.

    Frames of one thing share a partition, so once a marker reading sent last
    (status at epoch + 1 ms) is in the table, all earlier ones are too.
    """
    assert post(api, thing, {"frames": [{"timestamp": 1, "metrics": {"status": 0}}]}, SYNC).status_code == 200
    marker = f"SELECT count() FROM {{db}}.readings WHERE thing_id = '{thing}' AND ts = fromUnixTimestamp64Milli(1)"
    eventually(lambda: rows(api, stack, marker) == [[1]])


DOUBLES = "SELECT value FROM {db}.readings WHERE thing_id = '%s' AND data_type = 'Double'"


# ----- replies


def test_sync_reply_is_the_seed_ingest_summary(api, battery):
    reply = post(api, battery, SEED_FRAMES, SYNC)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["thingId"] == battery and body["framesIngested"] == 1
    assert body["metrics"] == ["status", "moduleSoC", "moduleSoH", "moduleVoltage", "moduleCurrent"]
    assert reply.headers["Preference-Applied"] == "wait=10"


def test_wait_query_parameter_also_waits(api, battery):
    reply = post(api, battery, SEED_FRAMES, wait="true")
    assert reply.status_code == 200 and reply.json()["framesIngested"] == 1


def test_async_reply_is_202_with_a_request_id(api, battery):
    reply = post(api, battery, SEED_FRAMES)
    assert reply.status_code == 202
    assert reply.json()["requestId"].startswith("req_") and reply.headers["X-Request-Id"] == reply.json()["requestId"]


# ----- seed 001's validation table, answered synchronously


@pytest.mark.parametrize("body,status,code,field", [
    ({"frames": []}, 400, "INVALID_PAYLOAD", "frames"),
    ({"frames": [{"timestamp": 1718884800000, "metrics": {}}]}, 400, "INVALID_PAYLOAD", "frames[0].metrics"),
    ({"frames": [{"timestamp": 1718884800000, "metrics": {"status": 1, "humidity": 3}}]}, 400, "UNKNOWN_METRIC",
     "frames[0].metrics.humidity"),
    ({"frames": [{"timestamp": 1718884800000, "metrics": {"status": 1}},
                 {"timestamp": 1718884800001, "metrics": {"moduleSoC": {"v": 1}}}]}, 400, "INVALID_VALUE",
     "frames[1].metrics.moduleSoC"),
    ({"frames": [{"timestamp": -5, "metrics": {"status": 1}}]}, 400, "INVALID_TIMESTAMP", "frames[0].timestamp"),
    ({"frames": [{"timestamp": 99999999999999, "metrics": {"status": 1}}]}, 400, "INVALID_TIMESTAMP",
     "frames[0].timestamp"),
])
def test_validation_rules(api, battery, body, status, code, field):
    reply = post(api, battery, body, SYNC)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["code"] == code and error["details"]["field"] == field


def test_invalid_value_names_metric_frame_and_value(api, battery):
    body = {"frames": [{"timestamp": 1718884800000, "metrics": {"moduleSoC": "high"}}]}
    message = post(api, battery, body, SYNC).json()["error"]["message"]
    assert "moduleSoC" in message and "frame 0" in message and "'high'" in message


def test_thing_without_type_is_424(api, battery_type):
    site, _ = battery_type
    untyped = api.post(f"/v2/sites/{site}/things", json={"thingName": "loose"}).json()["id"]
    reply = post(api, untyped, SEED_FRAMES, SYNC)
    assert reply.status_code == 424
    assert reply.json()["error"]["code"] == "TYPE_NOT_INITIALIZED"


def test_backfill_and_out_of_order_frames_are_accepted(api, battery):
    body = {"frames": [{"timestamp": 1718884800000 + 60_000 * i, "metrics": {"moduleSoC": float(i)}}
                       for i in (5, 1, 3)] + [{"timestamp": 946684800000, "metrics": {"moduleSoC": 0.5}}]}
    reply = post(api, battery, body, SYNC)
    assert reply.status_code == 200 and reply.json()["framesIngested"] == 4


# ----- idempotency (seed 002)


def test_repeated_idempotency_key_is_accepted_not_reprocessed(api, stack, battery):
    key = {"Idempotency-Key": f"sale-update-{battery}"}
    first = {"frames": [{"timestamp": 1718884800000, "metrics": {"moduleSoC": 10.0}}]}
    second = {"frames": [{"timestamp": 1718884800000, "metrics": {"moduleSoC": 99.0}}]}
    assert post(api, battery, first, key).status_code == 202
    assert post(api, battery, second, key).status_code == 202  # accepted (and refused by the processor)...
    again = post(api, battery, first, {**key, **SYNC})  # ...and a sync repeat returns the first verdict
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["framesIngested"] == 1
    reused = post(api, battery, second, {**key, **SYNC})  # another body under the key: 422
    assert reused.status_code == 422 and reused.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    # Not reprocessed: only the first body's value was ever written.
    settle(api, stack, battery)
    assert rows(api, stack, DOUBLES % battery) == [[10.0]]


def test_idempotency_survives_restarting_edge_and_processor(api, stack, battery):
    key = {"Idempotency-Key": f"restart-{battery}"}
    body = {"frames": [{"timestamp": 1718884800000, "metrics": {"moduleSoC": 1.0}}]}
    assert post(api, battery, body, {**key, **SYNC}).status_code == 200
    stack.restart("edge")
    stack.restart("processor")
    reply = post(api, battery, body, {**key, **SYNC})
    assert reply.status_code == 200 and reply.headers["Idempotent-Replayed"] == "true"
    changed = {"frames": [{"timestamp": 1718884800000, "metrics": {"moduleSoC": 2.0}}]}
    assert post(api, battery, changed, {**key, **SYNC}).status_code == 422  # the fingerprint survived too
    settle(api, stack, battery)
    assert rows(api, stack, DOUBLES % battery) == [[1.0]]


def test_idempotency_keys_are_per_org_and_bounded(api, stack, battery):
    reply = post(api, battery, SEED_FRAMES, {"Idempotency-Key": "x" * 256})
    assert reply.status_code == 400 and reply.json()["error"]["details"]["field"] == "Idempotency-Key"

    key = {"Idempotency-Key": f"shared-{battery}", **SYNC}
    assert "Idempotent-Replayed" not in post(api, battery, SEED_FRAMES, key).headers
    tenant = api.post("/v2/orgs", json={"name": f"tenant of {battery}"}).json()["adminKey"]["key"]
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": tenant}, timeout=30) as other:
        thing = register_battery(other, *register_battery_type(other))
        reply = post(other, thing, SEED_FRAMES, key)  # the same key in another org is a new request
    assert reply.status_code == 200 and "Idempotent-Replayed" not in reply.headers


def test_resending_the_same_frames_does_not_duplicate_readings(api, stack, battery):
    for _ in range(3):
        assert post(api, battery, SEED_FRAMES, SYNC).status_code == 200
    settle(api, stack, battery)
    # The documented FINAL-free pattern: one row per (thing, metric, ts), latest version.
    query = ("SELECT count() FROM (SELECT 1 FROM {db}.readings WHERE thing_id = '%s' "
             "ORDER BY version DESC LIMIT 1 BY thing_id, metric_id, ts)" % battery)
    assert rows(api, stack, query) == [[6]]  # the seed's 5 readings and settle()'s marker


# ----- limits (a stack of its own, with tight limits)


@pytest.fixture(scope="module")
def limited(kafka_bootstrap, tmp_path_factory):
    from sluice.stack import Stack

    settings = session_settings(kafka_bootstrap, tmp_path_factory.mktemp("limited"),
                                rate_limit=1.0, rate_burst=3.0, max_body_bytes=2000)
    running = Stack(settings)
    running.start()
    try:
        with httpx.Client(base_url=running.url, headers={"X-Api-Key": running.settings.admin_key},
                          timeout=30) as api:
            thing = register_battery(api, *register_battery_type(api))
            yield running, api, thing
    finally:
        running.stop()


def test_oversized_body_is_413(limited):
    _, api, thing = limited
    big = {"frames": [{"timestamp": 1718884800000 + i, "metrics": {"status": 1}} for i in range(100)]}
    reply = post(api, thing, big)
    assert reply.status_code == 413 and reply.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


def test_oversized_streamed_body_is_413_without_reading_it_all(limited):
    stack, _, thing = limited
    # Chunked transfer: no Content-Length for the edge to check up front, so it
    # must count while streaming and answer before the client is done.
    with socket.create_connection((stack.settings.http_host, stack.settings.http_port), timeout=5) as conn:
        conn.sendall((f"POST /v2/thing/{thing}/data HTTP/1.1\r\nHost: edge\r\n"
                      f"X-Api-Key: {stack.settings.admin_key}\r\nContent-Type: application/json\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n").encode())
        chunk = b"3e8\r\n" + b" " * 1000 + b"\r\n"
        sent = 0
        for sent in range(1, 10_001):  # up to 10 MB, 5000 times the limit
            try:
                conn.sendall(chunk)
            except OSError:  # the edge stopped reading and closed: it has answered
                break
            if select.select([conn], [], [], 0)[0]:
                break
        reply = conn.recv(65536).decode(errors="replace")
    assert reply.startswith("HTTP/1.1 413"), reply[:200]
    assert sent < 10_000


def test_rate_limit_is_429_with_retry_after(limited):
    _, api, thing = limited
    time.sleep(3)  # refill the bucket
    statuses = [post(api, thing, SEED_FRAMES).status_code for _ in range(6)]
    assert statuses[:3] == [202, 202, 202] and 429 in statuses[3:]
    reply = post(api, thing, SEED_FRAMES)
    assert reply.status_code == 429 and int(reply.headers["Retry-After"]) >= 1
    assert reply.json()["error"]["code"] == "RATE_LIMITED"


def test_unreachable_broker_fails_fast_instead_of_hanging():
    producer = RawProducer(f"127.0.0.1:{free_port()}", max_message_bytes=1_000_000, delivery_timeout_ms=1500)
    started = time.monotonic()
    with pytest.raises(ProducerUnavailable) as caught:
        asyncio.run(producer.send("raw", b"k", b"v"))
    assert time.monotonic() - started < 10
    assert caught.value.status == 503 and caught.value.retry_after >= 1
    producer._stop.set()


# ----- locations (seed 000)


def test_locations_are_stored_with_their_readings(api, stack, battery):
    body = {"frames": [
        {"timestamp": 1718884800000, "metrics": {"status": 1},
         "location": {"latitude": 55.6761, "longitude": 12.5683, "accuracyRadius": 12.5}},
        {"timestamp": 1718884860000, "location": {"latitude": 55.6762, "longitude": 12.5690}},
    ]}
    assert post(api, battery, body, SYNC).json()["framesIngested"] == 2
    # The locations sink is not the readings sink: settle()'s marker in readings says nothing of it.
    query = ("SELECT toUnixTimestamp64Milli(ts), latitude, longitude, accuracy_m "
             f"FROM {{db}}.locations WHERE thing_id = '{battery}' ORDER BY ts")
    expected = [[1718884800000, 55.6761, 12.5683, 12.5], [1718884860000, 55.6762, 12.569, None]]
    eventually(lambda: rows(api, stack, query) == expected)


def test_out_of_range_location_is_rejected_naming_the_field(api, battery):
    body = {"frames": [{"timestamp": 1718884800000, "location": {"latitude": 123, "longitude": 0}}]}
    reply = post(api, battery, body, SYNC)
    assert reply.status_code == 400
    assert reply.json()["error"]["details"]["field"] == "frames[0].location.latitude"


def test_repeat_is_marked_in_the_ingest_log(api, battery):
    key = {"Idempotency-Key": f"logged-{battery}"}
    first = post(api, battery, SEED_FRAMES, {**key, **SYNC}).json()["requestId"]
    repeat = post(api, battery, SEED_FRAMES, {**key, **SYNC}).json()["requestId"]
    logged = eventually(lambda: (r := api.get(f"/v2/ingest-log/{repeat}")).status_code == 200 and r.json())
    assert logged["duplicateOf"] == first and logged["status"] == "ingested"


def test_malformed_json_is_400_invalid_payload(api, battery):
    reply = api.post(f"/v2/thing/{battery}/data", content=b'{"frames": [', headers={
        **SYNC, "Content-Type": "application/json"})
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "INVALID_PAYLOAD" and "not valid JSON" in reply.json()["error"]["message"]
