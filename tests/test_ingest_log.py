"""The ingest log, the rejects table and dead-letter replay, end to end on the session stack.

Every test makes its own metric, type, site and things (names carry a random
token), so it never depends on what other tests on the shared stack did.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

import schemas
from sluice.replay import parse_since, replay_dead_letters
from tests.conftest import eventually

TS = 1718884800000


@pytest.fixture(scope="module")
def sensor(stack) -> dict:
    """A thing whose type has one Double metric; returns its ids and the metric's name."""
    token = secrets.token_hex(4)
    metric = f"temp_{token}"
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": stack.settings.admin_key}, timeout=30) as api:
        metric_id = created(api.post("/v2/definitions/metrics", json={
            "name": metric, "dataType": "Double", "defaultAggregation": "Last"}))
        type_id = created(api.post("/v2/definitions/thing-types", json={
            "displayName": f"Sensor {token}", "metricIds": [metric_id]}))
        site_id = created(api.post("/v2/sites", json={"name": f"Site {token}"}))
        thing_id = created(api.post(f"/v2/sites/{site_id}/things", json={
            "thingName": f"Sensor {token}", "thingTypeId": type_id}))
    return {"thing_id": thing_id, "site_id": site_id, "type_id": type_id, "metric": metric, "token": token}


def created(reply: httpx.Response) -> str:
    assert reply.status_code == 201, reply.text
    return reply.json()["id"]


def post_frames(api: httpx.Client, thing_id: str, metrics: dict) -> tuple[str, bytes]:
    """Post one frame as exact bytes; returns (request id, the body sent)."""
    body = json.dumps({"frames": [{"timestamp": TS, "metrics": metrics}]}).encode()
    reply = api.post(f"/v2/thing/{thing_id}/data", content=body, headers={"Content-Type": "application/json"})
    assert reply.status_code == 202, reply.text
    return reply.json()["requestId"], body


def judged(api: httpx.Client, thing_id: str, metrics: dict) -> tuple[str, dict]:
    """Post one frame and wait for its verdict; returns (request id, verdict)."""
    request_id, _ = post_frames(api, thing_id, metrics)
    return request_id, eventually(lambda: verdict_of(api, request_id))


def verdict_of(api: httpx.Client, request_id: str) -> dict | None:
    reply = api.get(f"/v2/ingest-log/{request_id}")
    if reply.status_code == 404:
        assert reply.json()["error"]["code"] == "NOT_FOUND"
        return None
    assert reply.status_code == 200, reply.text
    return reply.json()


def sql_rows(api: httpx.Client, query: str) -> list[list]:
    reply = api.post("/v2/admin/sql", json={"sql": query})
    assert reply.status_code == 200, reply.text
    return reply.json()["rows"]


def raw_end_offsets(stack) -> int:
    """The sum of the raw topic's end offsets: grows by one per message produced."""
    topic = schemas.Topics(stack.settings.topic_prefix).raw
    consumer = Consumer({"bootstrap.servers": stack.settings.kafka_bootstrap, "group.id": "test-watermarks"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions)
    finally:
        consumer.close()


def test_a_good_request_is_logged_as_ingested(api, sensor):
    request_id, _ = post_frames(api, sensor["thing_id"], {sensor["metric"]: 21.5})

    verdict = eventually(lambda: verdict_of(api, request_id))
    assert verdict["requestId"] == request_id
    assert verdict["thingId"] == sensor["thing_id"]
    assert verdict["route"] == "thing_data"
    assert verdict["status"] == "ingested"
    assert verdict["httpStatus"] == 200
    assert verdict["framesReceived"] == 1 and verdict["framesIngested"] == 1
    assert verdict["metrics"] == [sensor["metric"]]
    assert verdict["errors"] == []
    assert isinstance(verdict["receivedAt"], int) and verdict["receivedAt"] <= verdict["processedAt"]


def test_the_list_is_the_orgs_newest_verdicts_first(api, sensor):
    first, _ = post_frames(api, sensor["thing_id"], {sensor["metric"]: 1.0})
    eventually(lambda: verdict_of(api, first))
    second, _ = post_frames(api, sensor["thing_id"], {sensor["metric"]: 2.0})
    eventually(lambda: verdict_of(api, second))

    reply = api.get("/v2/ingest-log", params={"thingId": sensor["thing_id"]})
    assert reply.status_code == 200, reply.text
    items = reply.json()["items"]
    ids = [item["requestId"] for item in items]
    assert ids.index(second) < ids.index(first)
    assert {item["thingId"] for item in items} == {sensor["thing_id"]}
    assert [i["processedAt"] for i in items] == sorted((i["processedAt"] for i in items), reverse=True)

    reply = api.get("/v2/ingest-log", params={"thingId": sensor["thing_id"], "limit": 1})
    assert [item["requestId"] for item in reply.json()["items"]] == [second]
    assert api.get("/v2/ingest-log", params={"thingId": "thg_none"}).json() == {"items": []}
    for bad in (0, 1001):
        reply = api.get("/v2/ingest-log", params={"limit": bad})
        assert reply.status_code == 400 and reply.json()["error"]["code"] == "INVALID_PAYLOAD"


def test_an_unknown_request_id_is_404_saying_it_may_be_pending(api):
    reply = api.get("/v2/ingest-log/req_doesnotexist")
    assert reply.status_code == 404
    error = reply.json()["error"]
    assert error["code"] == "NOT_FOUND"
    assert "still being processed" in error["message"]


def test_another_orgs_request_is_404(api, stack, sensor):
    request_id, _ = post_frames(api, sensor["thing_id"], {sensor["metric"]: 3.0})
    eventually(lambda: verdict_of(api, request_id))
    reply = api.post("/v2/orgs", json={"name": f"other {sensor['token']}"})
    assert reply.status_code == 201, reply.text
    secret = reply.json()["adminKey"]["key"]

    def as_other_org() -> httpx.Response | None:
        reply = api.get(f"/v2/ingest-log/{request_id}", headers={"X-Api-Key": secret})
        return None if reply.status_code == 401 else reply  # the edge has not seen the key yet

    reply = eventually(as_other_org)
    assert reply.status_code == 404, reply.text
    assert reply.json()["error"]["code"] == "NOT_FOUND"
    listed = api.get("/v2/ingest-log", headers={"X-Api-Key": secret}).json()["items"]
    assert request_id not in {item["requestId"] for item in listed}


def test_an_undefined_metric_is_rejected_logged_and_kept_in_rejects(api, stack, sensor):
    undefined = f"undefined_{sensor['token']}"
    request_id, body = post_frames(api, sensor["thing_id"], {sensor["metric"]: 20.0, undefined: 1})

    verdict = eventually(lambda: verdict_of(api, request_id))
    assert verdict["status"] == "rejected"
    assert verdict["httpStatus"] == 400
    assert verdict["framesIngested"] == 0
    [error] = verdict["errors"]
    assert error["code"] == "UNKNOWN_METRIC"
    assert undefined in error["message"]
    assert error["field"] == f"frames[0].metrics.{undefined}"

    query = (f"SELECT reason, route, thing_id, item_index, original, toUnixTimestamp64Milli(received_at) "
             f"FROM {stack.settings.database}.rejects WHERE request_id = '{request_id}'")
    rows = eventually(lambda: sql_rows(api, query))
    assert rows == [["UNKNOWN_METRIC", "thing_data", sensor["thing_id"], -1, body.decode(), verdict["receivedAt"]]]


def test_replay_after_the_cause_is_fixed_ingests_the_dead_letter(api, stack, sensor):
    """A request for a thing without a type fails (424) and is dead-lettered; once the
    thing is given its type, replaying the dead letter ingests it under the same request id."""
    thing_id = created(api.post(f"/v2/sites/{sensor['site_id']}/things",
                                json={"thingName": f"Untyped {sensor['token']}"}))
    request_id, first = judged(api, thing_id, {sensor["metric"]: 5.0})
    assert (first["status"], first["httpStatus"]) == ("failed_dependency", 424)
    assert first["errors"][0]["code"] == "TYPE_NOT_INITIALIZED"
    rejects = f"SELECT count() FROM {stack.settings.database}.rejects WHERE request_id = '{request_id}'"
    eventually(lambda: sql_rows(api, rejects) == [[1]])  # the dead letter is on its topic

    bootstrap, settings = stack.settings.kafka_bootstrap, stack.settings
    before = raw_end_offsets(stack)
    assert replay_dead_letters(bootstrap, settings, request_id=request_id, dry_run=True) == (1, 0)
    assert replay_dead_letters(bootstrap, settings, reason="NO_SUCH_REASON", dry_run=True) == (0, 0)
    assert replay_dead_letters(bootstrap, settings, request_id=request_id, since_ms=first["processedAt"] + 60_000,
                               dry_run=True) == (0, 0)
    out = subprocess.run([sys.executable, "-m", "sluice.cli", "replay", "--request-id", request_id, "--dry-run"],
                         capture_output=True, text=True, env={**os.environ, **settings.to_env()}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "1 dead letters matched; dry run" in out.stdout
    assert raw_end_offsets(stack) == before  # a dry run produces nothing

    # The fix: the thing gets its type.
    reply = api.patch(f"/v2/things/{thing_id}", json={"thingTypeId": sensor["type_id"]})
    assert reply.status_code == 200 and reply.json()["thingTypeVersionId"].startswith("tdef_")
    assert replay_dead_letters(bootstrap, settings, request_id=request_id,
                               since_ms=first["processedAt"] - 60_000) == (1, 1)
    assert raw_end_offsets(stack) == before + 1

    second = eventually(lambda: (v := verdict_of(api, request_id)) and v["processedAt"] > first["processedAt"] and v)
    assert (second["status"], second["httpStatus"], second["framesIngested"]) == ("ingested", 200, 1)
    assert second["receivedAt"] == first["receivedAt"]  # the same request, judged again
    readings = f"SELECT value FROM {stack.settings.database}.readings WHERE thing_id = '{thing_id}'"
    eventually(lambda: sql_rows(api, readings) == [[5.0]])
    assert sql_rows(api, rejects) == [[1]]  # no new dead letter


def test_a_request_judged_twice_is_one_rejects_row(api, stack, sensor):
    """Replayed with its cause unfixed, a request is judged (and dead-lettered) again, as after
    a processor crash: rejects holds one row for it, the latest judgement."""
    undefined = f"undefined_{secrets.token_hex(3)}"
    request_id, first = judged(api, sensor["thing_id"], {undefined: 1.0})
    assert first["errors"][0]["code"] == "UNKNOWN_METRIC"
    table = f"{stack.settings.database}.rejects"
    judgements = f"SELECT max(toUnixTimestamp64Milli(rejected_at)) FROM {table} WHERE request_id = '{request_id}'"
    eventually(lambda: sql_rows(api, judgements) == [[first["processedAt"]]])
    assert replay_dead_letters(stack.settings.kafka_bootstrap, stack.settings, request_id=request_id) == (1, 1)
    # The second judgement has landed (its row, merged or not, is the newest).
    eventually(lambda: sql_rows(api, judgements)[0][0] > first["processedAt"])
    final = f"SELECT count(), any(reason) FROM {table} FINAL WHERE request_id = '{request_id}'"
    assert sql_rows(api, final) == [[1, "UNKNOWN_METRIC"]]


def test_parse_since_takes_epoch_ms_or_iso_8601():
    assert parse_since("1718884800000") == 1718884800000
    assert parse_since("2024-06-20T12:00:00Z") == 1718884800000
    assert parse_since("2024-06-20T12:00:00") == 1718884800000  # naive means UTC
    assert parse_since("2024-06-20T14:00:00+02:00") == 1718884800000
    with pytest.raises(ValueError):
        parse_since("yesterday")
