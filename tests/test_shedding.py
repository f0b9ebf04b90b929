"""Shedding at the edge, on a real broker and stack: with a stage stopped, the backlog behind
the edge passes a small bound and async ingest is answered 503 with Retry-After in each
dialect's shape, before the body is read; the catalog API and sync requests go on; once the
stage runs again the backlog drains and shedding stops. Then fairness: while the pipeline is
held over the bound, a light key keeps its share against a key offering four times as much."""

from __future__ import annotations

import os
import signal
import socket
from collections import Counter

import httpx
import pytest
from fastapi.testclient import TestClient

from bus.backlog_watch import Backlog
from bus.drain import Drain
from producers.app import create_app
from tests.conftest import eventually, session_settings, stack_with_battery
from tests.test_metrics import scrape, total
from tests.seed import SEED_FRAMES

BOUND_S = 2.0


@pytest.fixture(scope="module")
def shedding(kafka_bootstrap, clickhouse_url, tmp_path_factory):
    """A stack of its own shedding past BOUND_S; the supervisor leaves a stopped processor alone."""
    settings = session_settings(kafka_bootstrap, tmp_path_factory.mktemp("shedding"), clickhouse_url=clickhouse_url,
                                admit_backlog_s=BOUND_S, liveness_timeout_s=600.0, rate_limit=0.0)
    with stack_with_battery(settings) as running:
        yield running


def processor_pid(stack) -> int:
    return next(child.process.pid for child in stack.children if child.name == "processor")


def unanswered_body(url: str, path: str, key: str) -> bytes:
    """The reply to a POST whose 1000-byte body is never sent: only an edge that did not wait for it answers."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(f"POST {path} HTTP/1.1\r\nHost: edge\r\nX-Api-Key: {key}\r\nContent-Type: application/json\r\n"
                     "Content-Length: 1000\r\n\r\n".encode())
        return conn.recv(65536)


def test_the_edge_sheds_async_ingest_while_a_stage_is_stopped_and_stops_once_it_drains(shedding):
    stack, api, thing = shedding
    frames = f"/v2/thing/{thing}/data"
    assert api.post(frames, json=SEED_FRAMES, headers={"Prefer": "wait=10"}).status_code == 200
    # The view knows a group by its committed offsets: wait for the processor's first commit.
    eventually(lambda: any(s.labels["group"] == f"{stack.settings.topic_prefix}processors"
                           for s in scrape(f"{stack.url}/metrics").get("sluice_stage_backlog_seconds", ())))
    os.kill(processor_pid(stack), signal.SIGSTOP)
    try:
        # Requests keep coming; the stopped processor's backlog passes twice the bound: every async one is shed.
        shed = eventually(lambda: (r := api.post(frames, json=SEED_FRAMES)).status_code == 503
                          and r.json()["error"]["details"]["reason"] == "backlog" and r, timeout=60)
        error = shed.json()["error"]
        assert error["code"] == "UNAVAILABLE" and error["details"]["stage"] == "processors", error
        assert 1 <= int(shed.headers["Retry-After"]) <= 60

        # Every dialect, in its own error shape: seed 000's assets, seed 002's streams.
        asset = api.post(f"/v1/assets/{thing}/data", json={"advancedSensors": []})
        assert asset.status_code == 503 and "Retry-After" in asset.headers
        assert asset.json()["status"] == 503 and asset.json()["code"] == "unavailable", asset.text
        stream = api.post("/api/ingest", json=[{"a": 1}], headers={"X-Stream": "any"})
        assert stream.status_code == 503 and stream.json()["success"] is False, stream.text
        assert stream.json()["error"]["code"] == "UNAVAILABLE"

        # Before the body: one over the size limit is not a 413, one never sent is answered all the same.
        too_big = api.post(frames, content=b"x" * (stack.settings.max_body_bytes + 1))
        assert too_big.status_code == 503, too_big.text
        assert unanswered_body(stack.url, frames, stack.settings.admin_key).startswith(b"HTTP/1.1 503 ")

        # A sync request is admitted (the processor being stopped, its wait runs out: 202), the catalog answers.
        sync = api.post(frames, json=SEED_FRAMES, headers={"Prefer": "wait=1"})
        assert sync.status_code == 202, sync.text
        assert api.post("/v2/sites", json={"name": "while shedding"}).status_code == 201
        assert api.get(f"/v2/things/{thing}").status_code == 200
        assert api.get("/healthz").status_code == 200

        exported = scrape(f"{stack.url}/metrics")
        assert total(exported, "sluice_edge_shed", reason="backlog") >= 5
        behind = {s.labels["group"]: s.value for s in exported["sluice_stage_backlog_seconds"]}
        assert behind[f"{stack.settings.topic_prefix}processors"] > 2 * BOUND_S, behind
    finally:
        os.kill(processor_pid(stack), signal.SIGCONT)
    # Running again, it drains what waited, and the edge admits again.
    eventually(lambda: api.post(frames, json=SEED_FRAMES).status_code == 202, timeout=60, interval=0.5)


class Held:
    """A backlog view held over the bound (between it and twice it), in place of the broker's."""

    def __init__(self, seconds: float) -> None:
        self.backlog = Backlog("processors", Drain(1000, 100.0, seconds), 0.0)

    def current(self) -> Backlog:
        return self.backlog

    def stop(self) -> None:
        pass


def test_a_light_key_keeps_its_share_against_a_key_offering_four_times_as_much(shedding):
    stack, api, thing = shedding
    keys = {}
    for name in ("heavy", "light"):
        reply = api.post("/v2/api-keys", json={"name": name, "scopes": ["write"]})
        assert reply.status_code == 201, reply.text
        keys[name] = reply.json()["key"]
    app = create_app(stack.settings, stack.settings.kafka_bootstrap, None)
    accepted, offered = Counter(), Counter()
    with TestClient(app) as edge:
        app.state.backlog_watch.stop()
        app.state.backlog_watch = Held(1.5 * BOUND_S)
        for n in range(500):
            name = "light" if n % 5 == 4 else "heavy"
            offered[name] += 1
            reply = edge.post(f"/v2/thing/{thing}/data", json=SEED_FRAMES, headers={"X-Api-Key": keys[name]})
            assert reply.status_code in (202, 503), reply.text
            if reply.status_code == 202:
                accepted[name] += 1
            else:
                assert reply.json()["error"]["details"]["reason"] == "heavy_key"
    assert offered == {"heavy": 400, "light": 100}
    # Shedding at random would leave the light key a fifth of what is accepted; fairly, it keeps what it offers.
    assert accepted["light"] >= 90, accepted
    assert accepted["light"] / sum(accepted.values()) >= 0.4, accepted
    assert accepted["heavy"] > 0, accepted  # shed first, not starved
