"""Two edge workers on one port (SLUICE_EDGE_WORKERS=2), as `sluice up` runs them.

Every request goes on a fresh connection, so the kernel spreads them over both
workers; each answer must be the one a single edge gives: ingest served by
either worker, reads and the catalog (the primary's, forwarded by the other),
limits and error shapes. Then the primary goes away: ingest still works,
forwarded routes are 503 with Retry-After, and readiness says why.
"""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from tests.conftest import eventually, session_settings
from tests.seed import register_battery, register_battery_type

ROUNDS = 16  # fresh connections per check: both workers answer some with near certainty
FRAME = b'{"frames":[{"timestamp":1700000000000,"metrics":{"moduleSoC":50.0}}]}'


@pytest.fixture(scope="module")
def pair(kafka_bootstrap, tmp_path_factory):
    from sluice.stack import Stack

    running = Stack(session_settings(kafka_bootstrap, tmp_path_factory.mktemp("workers"), edge_workers=2))
    running.start()
    try:
        with httpx.Client(base_url=running.url, headers={"X-Api-Key": running.settings.admin_key},
                          timeout=30) as api:
            site, type_id = register_battery_type(api)
            thing = register_battery(api, site, type_id)
        yield running, thing, site, type_id
    finally:
        running.stop()


def fresh(stack, method: str, path: str, key: str | None = None, rounds: int = ROUNDS,
          **kwargs) -> list[httpx.Response]:
    headers = {"X-Api-Key": key or stack.settings.admin_key}
    replies = []
    for _ in range(rounds):
        with httpx.Client(base_url=stack.url, headers=headers, timeout=30) as client:
            replies.append(client.request(method, path, **kwargs))
    return replies


def test_sluice_up_runs_and_watches_both_workers(pair):
    stack, *_ = pair
    assert [c.name for c in stack.children if c.service.startswith("edge")] == ["edge", "edge-2"]
    assert set(stack.supervisor.children) >= {"edge", "edge-2"}


def test_ingest_and_its_errors_answer_alike_from_either_worker(pair):
    stack, thing, *_ = pair
    assert {r.status_code for r in fresh(stack, "POST", f"/v2/thing/{thing}/data", content=FRAME)} == {202}
    malformed = fresh(stack, "POST", f"/v2/thing/{thing}/data", content=b'{"frames":[')
    assert {(r.status_code, r.json()["error"]["code"]) for r in malformed} == {(400, "INVALID_PAYLOAD")}
    too_large = fresh(stack, "POST", f"/v2/thing/{thing}/data", content=b"x" * (1_048_576 + 1))
    assert {(r.status_code, r.json()["error"]["details"]["limit"]) for r in too_large} == {(413, 1_048_576)}
    wrong = fresh(stack, "POST", f"/v2/thing/{thing}/data", key="not-a-key", content=FRAME)
    assert {(r.status_code, r.json()["error"]["code"]) for r in wrong} == {(401, "UNAUTHORIZED")}


def test_a_thing_created_a_moment_ago_takes_data_on_either_worker(pair):
    stack, _, site, type_id = pair
    for number in range(ROUNDS // 2):
        created = fresh(stack, "POST", f"/v2/sites/{site}/things", rounds=1,
                        json={"thingName": f"new-{number}", "thingTypeId": type_id})[0]
        assert created.status_code == 201, created.text
        # At once, on new connections: some reach the worker that did not see the write.
        replies = fresh(stack, "POST", f"/v2/thing/{created.json()['id']}/data", content=FRAME)
        assert {r.status_code for r in replies} == {202}, [r.text for r in replies if r.status_code != 202]


def test_reads_and_the_catalog_are_the_primarys_from_either_worker(pair):
    stack, thing, *_ = pair
    replies = fresh(stack, "GET", f"/v2/things/{thing}")
    assert {(r.status_code, r.json()["id"]) for r in replies} == {(200, thing)}
    created = fresh(stack, "POST", "/v2/sites", json={"name": "forwarded"})
    assert {r.status_code for r in created} == {201}
    # The primary's 413 stops the body mid-way: the client's connection closes too.
    too_large = fresh(stack, "POST", "/v2/sites", content=b"x" * 70_000)
    assert {(r.status_code, r.headers.get("connection")) for r in too_large} == {(413, "close")}
    assert {r.status_code for r in fresh(stack, "GET", "/readyz")} == {200}


def test_without_the_primary_ingest_goes_on_and_the_rest_is_503(pair):
    stack, thing, *_ = pair
    primary = next(c for c in stack.children if c.name == "edge")
    primary.process.send_signal(signal.SIGKILL)
    primary.process.wait(30)
    time.sleep(0.5)  # its listening socket is gone: every connection reaches the other worker
    assert {r.status_code for r in fresh(stack, "POST", f"/v2/thing/{thing}/data", content=FRAME)} == {202}
    forwarded = fresh(stack, "GET", f"/v2/things/{thing}")
    assert {(r.status_code, r.headers["retry-after"], r.json()["error"]["code"]) for r in forwarded} == {
        (503, "1", "UNAVAILABLE")}

    def not_ready_for_the_primary():
        reply = httpx.get(f"{stack.url}/readyz", timeout=10)
        return reply.status_code == 503 and not reply.json()["components"]["primary-edge"]["ok"]

    eventually(not_ready_for_the_primary, timeout=15)
    stack._respawn("edge")  # what the supervisor does; the module's teardown stops it again
    eventually(lambda: httpx.get(f"{stack.url}/readyz", timeout=10).status_code == 200, timeout=90)
