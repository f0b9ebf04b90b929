"""The ingest routes' fast dispatch (producers.edge.fast_ingest) cannot drift from FastAPI.

Every ingest route of every dialect is fast-dispatched, and an ingest route the fast path
cannot bind stops the edge from starting. A corpus of requests of every dialect (good,
malformed, unauthorized, unknown targets, invalid query parameters, over the limits) is
sent to two edges on the same broker and catalog: the edge as it runs, and the same app
without the fast-path middleware (FastAPI's router answers everything). Status, headers
and bodies must be the same bytes; request ids are drawn from a counter per edge.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import pytest
from fastapi import APIRouter, Depends, Header, Request
from fastapi.testclient import TestClient

import producers.app
import producers.edge.submit
from config import Settings
from producers import dialects
from producers.app import create_app, ingest_routes
from producers.edge.auth import Principal, principal
from producers.edge.fast_ingest import FastIngest, fast_routes
from tests.seed import org_with_every_target

TS = 1_750_000_000_000
WAIT = {"Prefer": "wait=15"}


def test_every_ingest_route_of_every_dialect_is_fast_dispatched():
    app = create_app(Settings.from_env(), "127.0.0.1:1", None)
    document = app.openapi()["paths"]
    fast = {(method, f.route.path) for f in fast_routes(ingest_routes(), document) for method in f.route.methods}
    for dialect in dialects.registered():
        routes = {(method, route.path) for route in dialect.router.routes for method in route.methods}
        assert routes and routes <= fast, f"{dialect.name}: {sorted(routes - fast)} not fast-dispatched"
    # Every documented operation on a dialect's paths is one of them: none was declared elsewhere.
    on_dialect_paths = {(method.upper(), path) for path, operations in document.items()
                        if dialects.dialect_for(path.replace("{", "x").replace("}", "x")) for method in operations}
    assert on_dialect_paths == fast


def test_an_ingest_route_the_fast_path_cannot_bind_stops_the_edge(monkeypatch):
    router = APIRouter()

    @router.post("/v9/probe/{probe_id}/data", status_code=202)
    async def probe(probe_id: str, request: Request, who: Principal = Depends(principal),
                    x_probe: str | None = Header(None)) -> dict:
        return {}

    probe_dialect = dialects.Dialect("probe", router, re.compile(r"^/v9/probe(?:/|$)"))
    registered = dialects.registered()
    monkeypatch.setattr(dialects, "registered", lambda: (*registered, probe_dialect))
    with pytest.raises(RuntimeError, match=r"cannot dispatch.*POST /v9/probe/\{probe_id\}/data"):
        create_app(Settings.from_env(), "127.0.0.1:1", None)


# ----- the same answers through both paths


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    body: bytes
    headers: dict
    fast: bool = True  # whether the fast path dispatches it (else a layer before it, or FastAPI, answers)


def json_case(name: str, path: str, document: object, fast: bool = True, **headers: str) -> Case:
    return Case(name, path, orjson.dumps(document), {"Content-Type": "application/json", **headers}, fast)


def targets_of(org: dict) -> dict[str, tuple[str, object, dict]]:
    """A valid request of each ingest route: path, body, extra headers."""
    record = {"t": TS, "v": 1.5}
    sensor = {"advancedSensors": [{"time": TS, "sensorId": org["metric"], "value": 2.5}]}
    point = {"time": "2025-06-15T15:06:40Z", "ship_id": "Barge", "cargo_id": "level", "value": 3.5}
    return {
        "frames": (f"/v2/thing/{org['thing']}/data", {"frames": [{"timestamp": TS, "metrics": {"level": 1.5}}]}, {}),
        "templates": (f"/v2/thing/{org['thing']}/data/template/{org['template']}", {"samples": [record]}, {}),
        "streams": ("/api/ingest", [{"tank": "T1", "level": 4.5}], {"X-Stream": org["stream"]}),
        "harbor": (f"/api/v1/ingest/ingest/{org['harbor']}", point, {}),
        "harbor batch": (f"/api/v1/ingest/ingest/{org['harbor']}/batch", [point], {}),
        "datasource": ("/restapi/datasource/insert", {"datasource_id": org["datasource"], "data": [
            {"timestamp": "2025-01-01T10:00:00Z", "value": 5.5}]}, {}),
        "asset": (f"/v1/assets/{org['thing']}/data", sensor, {}),
        "asset batch": ("/v1/assets/data", {"assets": [{"assetId": org["thing"], **sensor}]}, {}),
    }


def corpus(org: dict, max_body: int) -> list[Case]:
    key = {"X-Api-Key": org["key"]}
    cases = []
    for name, (path, document, headers) in targets_of(org).items():
        cases += [
            json_case(f"{name}: good", path, document, **key, **headers),
            json_case(f"{name}: good, bearer", path, document, Authorization=f"Bearer {org['key']}", **headers),
            json_case(f"{name}: no key", path, document, **headers),
            json_case(f"{name}: unknown key", path, document, **{"X-Api-Key": "slk_" + "0" * 40}, **headers),
            json_case(f"{name}: two keys", path, document, Authorization="Bearer slk_other", **key, **headers),
            Case(f"{name}: not JSON", path, b'{"frames": [', {"Content-Type": "application/json", **key, **headers}),
            json_case(f"{name}: wrong outline", path, {"nothing": []}, **key, **headers),
            json_case(f"{name}: a JSON scalar", path, 42, **key, **headers),
            Case(f"{name}: empty body", path, b"", {**key, **headers}),
            Case(f"{name}: gzip", path, gzip.compress(orjson.dumps(document)),
                 {"Content-Type": "application/json", "Content-Encoding": "gzip", **key, **headers}),
            Case(f"{name}: unknown coding", path, b"xx", {"Content-Encoding": "br", **key, **headers}, fast=False),
            Case(f"{name}: over the limit", path, b" " * (max_body + 1),
                 {"Content-Type": "application/json", **key, **headers}, fast=False),
        ]
    frames_path, frames, _ = targets_of(org)["frames"]
    asset_path, sensor, _ = targets_of(org)["asset"]
    missing = "thg_" + "0" * 24
    cases += [
        json_case("frames: sync", frames_path, frames, **key, **WAIT),
        json_case("frames: ?wait=true", frames_path + "?wait=true", frames, **key),
        json_case("frames: an invalid query parameter", frames_path + "?wait=maybe", frames, fast=False, **key),
        json_case("frames: unknown thing", f"/v2/thing/{missing}/data", frames, **key),
        json_case("templates: unknown template", f"/v2/thing/{org['thing']}/data/template/tmpl_none", {}, **key),
        json_case("templates: preview", targets_of(org)["templates"][0] + "?previewOnly=true",
                  targets_of(org)["templates"][1], **key),
        json_case("streams: unknown stream", "/api/ingest", [{"a": 1}], **key, **{"X-Stream": "no-such-stream"}),
        json_case("streams: no stream named", "/api/ingest", [{"a": 1}], **key),
        json_case("harbor: unknown harbor", "/api/v1/ingest/ingest/hbr_none", {}, **key),
        json_case("datasource: unknown data source", "/restapi/datasource/insert",
                  {"datasource_id": "ds_none", "data": [{"value": 1}]}, **key),
        json_case("asset: unknown asset", f"/v1/assets/{missing}/data", sensor, **key),
        json_case("asset: sync", asset_path, sensor, **key, **WAIT),
    ]
    return cases


class Answers:
    """One edge's answers to a corpus, and which of its requests the fast path dispatched."""

    def __init__(self) -> None:
        self.replies: dict[str, tuple[int, list, bytes]] = {}
        self.dispatched: set[str] = set()


@contextlib.contextmanager
def edge(settings: Settings, fast: bool) -> Iterator[TestClient]:
    app = create_app(settings, settings.kafka_bootstrap, None)
    if not fast:
        # FastAPI's own path: the same app without the fast-path middleware.
        app.user_middleware = [m for m in app.user_middleware if m.cls is not FastIngest]
    with TestClient(app) as client:
        yield client


def answer(settings: Settings, cases: list[Case], fast: bool, monkeypatch) -> Answers:
    """Each case's reply from one edge; request ids `req_f…` (fast) or `req_s…`, counted from 1."""
    answers = Answers()
    counter = itertools.count(1)
    letter = "f" if fast else "s"
    monkeypatch.setattr(producers.edge.submit, "new_request_id", lambda: f"req_{letter}{next(counter):023d}")
    current: list[str] = []
    dispatch = FastIngest._dispatch

    async def counted(self, *args, **kwargs):
        answers.dispatched.add(current[0])
        return await dispatch(self, *args, **kwargs)

    monkeypatch.setattr(FastIngest, "_dispatch", counted)
    with edge(settings, fast) as client:
        for case in cases:
            current[:] = [case.name]
            reply = client.post(case.path, content=case.body, headers=case.headers)
            body = re.sub(rb"req_[fs](\d{23})", rb"req_x\1", reply.content)
            headers = [(k, re.sub(r"req_[fs](\d{23})", r"req_x\1", v)) for k, v in reply.headers.multi_items()]
            answers.replies[case.name] = (reply.status_code, headers, body)
    monkeypatch.setattr(FastIngest, "_dispatch", dispatch)
    return answers


def assert_same(cases: list[Case], fast: Answers, slow: Answers) -> None:
    assert not slow.dispatched
    for case in cases:
        assert (case.name in fast.dispatched) == case.fast, f"{case.name}: fast-dispatched is not {case.fast}"
        assert fast.replies[case.name] == slow.replies[case.name], case.name


@pytest.fixture(scope="module")
def org(stack) -> dict:
    return org_with_every_target(stack.url, stack.settings.admin_key, "fast path")


def test_both_paths_answer_every_dialect_alike(stack, org, monkeypatch):
    settings = stack.settings
    cases = corpus(org, settings.max_body_bytes)
    fast = answer(settings, cases, True, monkeypatch)
    slow = answer(settings, cases, False, monkeypatch)
    assert_same(cases, fast, slow)
    statuses = {fast.replies[case.name][0] for case in cases}
    assert {200, 202, 400, 401, 404, 413, 415} <= statuses, statuses  # the corpus reaches what it means to


def test_both_paths_answer_alike_over_the_rate(stack, org, monkeypatch):
    settings = dataclasses.replace(stack.settings, rate_limit=0.001, rate_burst=2.0)
    key = {"X-Api-Key": org["key"]}
    cases = [json_case(f"{name} #{n}", path, document, **key, **headers)
             for name, (path, document, headers) in targets_of(org).items() for n in range(2)]
    fast = answer(settings, cases, True, monkeypatch)
    slow = answer(settings, cases, False, monkeypatch)
    assert_same(cases, fast, slow)
    assert [fast.replies[case.name][0] for case in cases].count(429) == len(cases) - 2
