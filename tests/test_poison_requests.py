"""One bad request is its own verdict, never its batch's: poison requests queued
among valid ones (so they share the processor's batches) become dead letters
with their reason, every valid reading lands exactly once, the processor keeps
running, and bodies up to the edge's limit are accepted and ingested whole."""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import orjson
import pytest

from tests.conftest import eventually, session_settings
from tests.seed import SEED_METRICS

VALID_REQUESTS = 1500
BATCH = 200  # the processor's batch: a backlog of 1,500+ messages fills every batch
METRICS = [m["name"] for m in SEED_METRICS] + ["moduleTemp"]  # six per frame
T0 = 1718884800000
KIB = 1024


def frame(i: int) -> dict:
    return {"timestamp": T0 + i * 1000, "metrics": {
        "status": i % 7, "moduleSoC": 87, "moduleSoH": 98, "moduleVoltage": 52, "moduleCurrent": 12,
        "moduleTemp": 25}}


def frames_body(frames: int, size: int | None = None) -> bytes:
    """A valid body of `frames` frames of six metrics, padded with whitespace to `size` bytes."""
    body = orjson.dumps({"frames": [frame(i) for i in range(frames)]})
    assert size is None or len(body) <= size
    return body if size is None else body + b" " * (size - len(body))


def poison_bodies(max_body: int) -> dict[str, tuple[bytes, str]]:
    """name -> (body, the dead letter's reason)."""
    deep = b"[" * 1000 + b"1" + b"]" * 1000
    prefix = b'{"frames":[{"timestamp":%d,"metrics":{' % T0
    huge_name = b"m" * (max_body - len(prefix) - len(b'"":1}}]}'))
    return {
        "nested 1,000 deep": (prefix + b'"moduleSoC":' + deep + b"}}]}", "INVALID_VALUE"),
        "900 KiB string for a Double": (prefix + b'"moduleSoC":"' + b"x" * 900 * KIB + b'"}}]}', "INVALID_VALUE"),
        "900 KiB metric name": (prefix + b'"' + b"n" * 900 * KIB + b'":1}}]}', "UNKNOWN_METRIC"),
        "max-size metric name": (prefix + b'"' + huge_name + b'":1}}]}', "UNKNOWN_METRIC"),
    }


@pytest.fixture(scope="module")
def poisoned(kafka_bootstrap, tmp_path_factory):
    """A stack of its own (small processor batches, no rate limit), a six-metric type, and a
    function registering a new thing of that type."""
    from sluice.stack import Stack

    stack = Stack(session_settings(kafka_bootstrap, tmp_path_factory.mktemp("poison"), processor_batch=BATCH,
                                   rate_limit=0.0))
    stack.start()
    try:
        with httpx.Client(base_url=stack.url, headers={"X-Api-Key": stack.settings.admin_key}, timeout=60) as api:
            metric_ids = []
            for body in SEED_METRICS + [{"name": "moduleTemp", "dataType": "Double", "defaultAggregation": "Avg"}]:
                reply = api.post("/v2/definitions/metrics", json=body)
                assert reply.status_code == 201, reply.text
                metric_ids.append(reply.json()["id"])
            type_id = api.post("/v2/definitions/thing-types",
                               json={"displayName": "Battery6", "metricIds": metric_ids}).json()["id"]
            site = api.post("/v2/sites", json={"name": "Plant P"}).json()["id"]

            def new_thing() -> str:
                reply = api.post(f"/v2/sites/{site}/things", json={"thingName": "Battery", "thingTypeId": type_id})
                assert reply.status_code == 201, reply.text
                return reply.json()["id"]

            yield stack, api, new_thing
    finally:
        stack.stop()


async def send_concurrently(url: str, key: str, requests: list[tuple[str, bytes]]) -> list[httpx.Response]:
    """POST every (thing, body) with 32 in flight; the replies in order."""
    limit = asyncio.Semaphore(32)
    headers = {"X-Api-Key": key, "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        async def one(thing: str, body: bytes) -> httpx.Response:
            async with limit:
                return await client.post(f"/v2/thing/{thing}/data", content=body)
        return await asyncio.gather(*(one(thing, body) for thing, body in requests))


def sql(api, stack, query: str) -> list:
    reply = api.post("/v2/admin/sql", json={"sql": query.format(db=stack.settings.database)})
    assert reply.status_code == 200, reply.text
    return reply.json()["rows"]


def readings(api, stack, thing: str) -> list:
    """[logical rows (the documented FINAL-free pattern), distinct (metric, ts)] of a thing."""
    logical = sql(api, stack, "SELECT count() FROM (SELECT 1 FROM {db}.readings WHERE thing_id = '%s' "
                  "ORDER BY version DESC LIMIT 1 BY thing_id, metric_id, ts)" % thing)[0][0]
    distinct = sql(api, stack, "SELECT uniqExact(metric_id, ts) FROM {db}.readings WHERE thing_id = '%s'"
                   % thing)[0][0]
    return [logical, distinct]


def processor_pid(stack) -> int:
    return next(child.process.pid for child in stack.children if child.name == "processor")


def test_poison_requests_are_their_own_verdicts_and_spare_their_batch_mates(poisoned):
    stack, api, new_thing = poisoned
    small, large, largest = new_thing(), new_thing(), new_thing()
    max_body = stack.settings.max_body_bytes
    poisons = poison_bodies(max_body)
    big_bodies = {large: frames_body(7000), largest: frames_body(7600, 1_040_000)}
    assert 900_000 < len(big_bodies[large]) < 1_000_000  # ~945 KB, 42,000 readings: ~2 MB of frames
    assert all(len(body) <= max_body for body, _ in poisons.values())

    requests = [(small, orjson.dumps({"frames": [frame(i)]})) for i in range(VALID_REQUESTS)]
    poison_at = {}  # index in `requests` -> poison name
    for n, name in enumerate(poisons):
        poison_at[(n + 1) * VALID_REQUESTS // (len(poisons) + 2)] = name
    for index in sorted(poison_at, reverse=True):
        requests.insert(index, (small, poisons[poison_at[index]][0]))
    requests.insert(len(requests) // 2, (large, big_bodies[large]))
    requests.insert(len(requests) // 3, (largest, big_bodies[largest]))

    # Queue everything while the processor is paused, so it meets a backlog: full batches, poison inside.
    os.kill(processor_pid(stack), signal.SIGSTOP)
    try:
        replies = asyncio.run(send_concurrently(stack.url, stack.settings.admin_key, requests))
    finally:
        os.kill(processor_pid(stack), signal.SIGCONT)
    assert [r.status_code for r in replies] == [202] * len(requests), {r.status_code: r.text for r in replies}
    poison_ids = {name: replies[requests.index((small, poisons[name][0]))].json()["requestId"]
                  for name in poisons}

    expected = {small: VALID_REQUESTS * len(METRICS), large: 7000 * len(METRICS),
                largest: 7600 * len(METRICS)}
    for thing, count in expected.items():
        eventually(lambda: readings(api, stack, thing) == [count, count], timeout=90, interval=0.5)
    stack.check_alive()

    for name, request_id in poison_ids.items():
        reason = poisons[name][1]
        verdict = eventually(lambda: (r := api.get(f"/v2/ingest-log/{request_id}")).status_code == 200 and r.json(),
                             timeout=30)
        assert verdict["status"] == "rejected" and verdict["errors"][0]["code"] == reason, (name, verdict)
        assert len(verdict["errors"][0]["message"]) <= 512, name
        rejected = sql(api, stack, "SELECT reason, length(original) FROM {db}.rejects WHERE request_id = '%s'"
                       % request_id)
        assert rejected == [[reason, len(poisons[name][0])]], name
    stack.check_alive()


def test_a_sync_poison_request_gets_its_verdict(poisoned):
    stack, api, new_thing = poisoned
    small = new_thing()
    body = poison_bodies(stack.settings.max_body_bytes)["nested 1,000 deep"][0]
    reply = api.post(f"/v2/thing/{small}/data", content=body,
                     headers={"Prefer": "wait=20", "Content-Type": "application/json"})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["code"] == "INVALID_VALUE"
    stack.check_alive()


def test_largest_accepted_body_is_202_and_ingested(poisoned):
    stack, api, new_thing = poisoned
    largest = new_thing()
    body = frames_body(7700, stack.settings.max_body_bytes)
    huge_header = "application/json; x=" + "x" * 100 * KIB  # headers have no size limit of their own
    reply = api.post(f"/v2/thing/{largest}/data", content=body, headers={"Content-Type": huge_header})
    assert reply.status_code == 202, reply.text
    too_big = api.post(f"/v2/thing/{largest}/data", content=body + b" ", headers={"Content-Type": "application/json"})
    assert too_big.status_code == 413
    expected = 7700 * len(METRICS)
    eventually(lambda: readings(api, stack, largest) == [expected, expected], timeout=90, interval=0.5)


def test_replay_works_for_every_dead_letter_however_large(poisoned):
    from sluice.replay import replay_dead_letters

    stack, api, new_thing = poisoned
    small = new_thing()
    sent = {}  # request id -> body
    for name, (body, reason) in poison_bodies(stack.settings.max_body_bytes).items():
        reply = api.post(f"/v2/thing/{small}/data", content=body,
                         headers={"Prefer": "wait=20", "Content-Type": "application/json"})
        assert reply.status_code == 400 and reply.json()["error"]["code"] == reason, (name, reply.text)
        sent[reply.headers["X-Request-Id"]] = body
    judged = "SELECT count(), max(length(original)), max(rejected_at) FROM {db}.rejects FINAL WHERE request_id = '%s'"
    first = {}
    for request_id, body in sent.items():
        first[request_id] = eventually(lambda: (row := sql(api, stack, judged % request_id)[0])[0] == 1 and row)
        assert first[request_id][:2] == [1, len(body)], first[request_id]
    for request_id in sent:
        assert replay_dead_letters(stack.settings.kafka_bootstrap, stack.settings, request_id=request_id) == (1, 1)
    for request_id, body in sent.items():  # judged again: one row per judged item, the latest judgement's
        eventually(lambda: (row := sql(api, stack, judged % request_id)[0])[:2] == [1, len(body)]
                   and row[2] > first[request_id][2], timeout=60)
    stack.check_alive()
