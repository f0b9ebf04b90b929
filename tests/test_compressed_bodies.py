"""Compressed request bodies on the real stack: every dialect's ingest route lands a gzip or
zstd body; the body limit holds for the inflated size (a bomb is a quick 413 and the edge's
memory does not move); another coding is 415 and a corrupt body 400, each in the route's
own error shape; and curl sends a gzip file as any client would."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import orjson
import pytest

from producers.edge.content_coding import zstd
from tests.conftest import eventually
from tests.seed import org_with_every_target

TS = 1718884800000
WAIT = {"Prefer": "wait=15"}
COMPRESS = {"gzip": gzip.compress, "zstd": zstd.compress}
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def org(stack) -> dict:
    return org_with_every_target(stack.url, stack.settings.admin_key, "zipped")


@pytest.fixture()
def client(stack, org):
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": org["key"]}, timeout=30) as api:
        yield api
    stack.check_alive()


def created(reply: httpx.Response) -> dict:
    assert reply.status_code == 201, reply.text
    return reply.json()


def send(client: httpx.Client, path: str, document: object, coding: str, **headers: str) -> httpx.Response:
    return client.post(path, content=COMPRESS[coding](orjson.dumps(document)), headers={
        "Content-Type": "application/json", "Content-Encoding": coding, **headers})


def sql(stack, query: str) -> list:
    reply = httpx.post(f"{stack.url}/v2/admin/sql", json={"sql": query.format(db=stack.settings.database)},
                       headers={"X-Api-Key": stack.settings.admin_key}, timeout=30)
    assert reply.status_code == 200, reply.text
    return reply.json()["rows"]


def reading(stack, thing: str, ts: int) -> list:
    return sql(stack, f"SELECT value FROM {{db}}.readings WHERE thing_id = '{thing}' "
                      f"AND ts = fromUnixTimestamp64Milli({ts})")


# ----- every dialect's ingest route lands a compressed body


@pytest.mark.parametrize("coding", list(COMPRESS))
def test_frames_land(stack, org, client, coding):
    ts = TS + (1 if coding == "gzip" else 2)
    reply = send(client, f"/v2/thing/{org['thing']}/data",
                 {"frames": [{"timestamp": ts, "metrics": {"level": 1.5}}]}, coding, **WAIT)
    assert reply.status_code == 200 and reply.json()["framesIngested"] == 1, reply.text
    eventually(lambda: reading(stack, org["thing"], ts) == [[1.5]])


@pytest.mark.parametrize("coding", list(COMPRESS))
def test_a_template_payload_lands(stack, org, client, coding):
    ts = TS + (11 if coding == "gzip" else 12)
    reply = send(client, f"/v2/thing/{org['thing']}/data/template/{org['template']}",
                 {"samples": [{"t": ts, "v": 2.5}]}, coding)
    assert reply.status_code == 200 and reply.json()["readingsWritten"] == 1, reply.text
    eventually(lambda: reading(stack, org["thing"], ts) == [[2.5]])


@pytest.mark.parametrize("coding", list(COMPRESS))
def test_asset_data_lands_single_and_batch(stack, org, client, coding):
    ts = TS + (21 if coding == "gzip" else 23)

    def sensor(at: int, value: float) -> dict:
        return {"advancedSensors": [{"time": at, "sensorId": org["metric"], "value": value}]}

    reply = send(client, f"/v1/assets/{org['thing']}/data", sensor(ts, 3.5), coding, **WAIT)
    assert reply.status_code == 200 and reply.json()["advancedSensors"] == 1, reply.text
    reply = send(client, "/v1/assets/data", {"assets": [{"assetId": org["thing"], **sensor(ts + 1, 4.5)}]},
                 coding, **WAIT)
    assert reply.status_code == 200 and reply.json()["assets"] == 1, reply.text
    eventually(lambda: reading(stack, org["thing"], ts) == [[3.5]] and reading(stack, org["thing"], ts + 1) == [[4.5]])


@pytest.mark.parametrize("coding", list(COMPRESS))
def test_harbor_points_land_single_and_batch(stack, client, coding):
    harbor = created(client.post("/v2/harbors", json={"name": f"Port {coding}", "autoProvision": True}))["id"]
    point = {"time": "2024-06-20T12:00:00Z", "ship_id": "Barge", "cargo_id": "level", "value": 5.5}
    reply = send(client, f"/api/v1/ingest/ingest/{harbor}", point, coding, **WAIT)
    assert reply.status_code == 200 and reply.json()["points"] == 1, reply.text
    reply = send(client, f"/api/v1/ingest/ingest/{harbor}/batch", [{**point, "time": "2024-06-20T12:01:00Z",
                                                                   "value": 6.5}], coding, **WAIT)
    assert reply.status_code == 200 and reply.json()["points"] == 1, reply.text
    eventually(lambda: sql(stack, "SELECT toUnixTimestamp64Milli(ts), value FROM {db}.readings WHERE thing_id IN "
                                  f"(SELECT thing_id FROM {{db}}.things WHERE place_id = '{harbor}') ORDER BY ts")
               == [[TS, 5.5], [TS + 60_000, 6.5]])


@pytest.mark.parametrize("coding", list(COMPRESS))
def test_stream_items_land(stack, client, coding):
    reply = send(client, "/api/ingest", [{"tank": "T1", "level": 7.5}], coding, **{"X-Stream": "tanks"})
    assert reply.status_code == 202 and reply.json()["data"]["items_received"] == 1, reply.text
    request_id = reply.json()["data"]["request_id"]
    eventually(lambda: sql(stack, "SELECT item.level::Float64 FROM {db}.stream_items "
                                  f"WHERE request_id = '{request_id}'") == [[7.5]])


@pytest.mark.parametrize("coding", list(COMPRESS))
def test_datasource_records_land(stack, org, client, coding):
    value = 8.5 if coding == "gzip" else 9.5
    reply = send(client, "/restapi/datasource/insert", {"datasource_id": org["datasource"], "data": [
        {"timestamp": "2025-01-01T10:00:00Z", "value": value}]}, coding)
    assert reply.status_code == 200, reply.text
    request_id = reply.headers["X-Request-Id"]
    eventually(lambda: sql(stack, "SELECT record FROM {db}.datasource_records "
                                  f"WHERE request_id = '{request_id}'") == [[orjson.dumps(
                                      {"timestamp": "2025-01-01T10:00:00Z", "value": value}).decode()]])


def test_a_catalog_route_takes_a_compressed_body_too(client):
    reply = send(client, "/v2/sites", {"name": "Zipped site"}, "gzip")
    assert reply.status_code == 201 and reply.json()["name"] == "Zipped site", reply.text
    bomb = gzip.compress(b'{"name": "' + b" " * MiB + b'"}')  # inflates past the API routes' 64 KiB
    reply = client.post("/v2/sites", content=bomb, headers={"Content-Encoding": "gzip"})
    assert reply.status_code == 413 and reply.json()["error"]["details"]["limit"] == 65536, reply.text


def test_curl_sends_a_gzip_file(stack, org, tmp_path: Path):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    ts = TS + 31
    body = tmp_path / "frames.json.gz"
    body.write_bytes(gzip.compress(orjson.dumps({"frames": [{"timestamp": ts, "metrics": {"level": 10.5}}]})))
    out = subprocess.run(
        ["curl", "-s", "-w", "\n%{http_code}", "--data-binary", f"@{body}", "-H", "Content-Encoding: gzip",
         "-H", "Content-Type: application/json", "-H", f"X-Api-Key: {org['key']}", "-H", "Prefer: wait=15",
         f"{stack.url}/v2/thing/{org['thing']}/data"], capture_output=True, text=True, timeout=60)
    reply, status = out.stdout.rsplit("\n", 1)
    assert status == "200" and orjson.loads(reply)["framesIngested"] == 1, out
    eventually(lambda: reading(stack, org["thing"], ts) == [[10.5]])


# ----- the limit is on the inflated size; bombs cost nothing


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(f"{field}:"))


def test_a_bomb_is_a_quick_413_and_the_edge_memory_does_not_jump(stack, org, client):
    edge = next(child for child in stack.children if child.name == "edge").process.pid
    resident = _status_kib(edge, "VmRSS")
    assert resident > 10_000  # a live edge (a probe answering 0 would prove nothing)
    Path(f"/proc/{edge}/clear_refs").write_text("5")  # peak RSS := current RSS
    # 10 KB of gzip inflating to 10 MiB; 32 KB of zstd inflating to 1 GiB.
    gzip_bomb = gzip.compress(b"\0" * (10 * MiB), 9)
    zstd_bomb = zstd.ZstdCompressor(level=19)
    zstd_bomb = b"".join(zstd_bomb.compress(b"\0" * MiB) for _ in range(1024)) + zstd_bomb.flush()
    assert len(gzip_bomb) < 11_000 and len(zstd_bomb) < 40_000
    for coding, bomb in (("gzip", gzip_bomb), ("zstd", zstd_bomb)):
        started = time.monotonic()
        reply = client.post(f"/v2/thing/{org['thing']}/data", content=bomb, headers={"Content-Encoding": coding})
        assert time.monotonic() - started < 2, coding
        assert reply.status_code == 413, reply.text
        error = reply.json()["error"]
        assert error["code"] == "PAYLOAD_TOO_LARGE" and error["details"]["limit"] == MiB
        assert f"{coding} body inflates to more than" in error["message"]
    grown = _status_kib(edge, "VmHWM") - resident
    assert grown < 64 * 1024, f"the edge's peak memory grew by {grown} KiB"


def test_a_body_just_under_the_limit_inflated_lands(stack, org, client):
    ts = TS + 41
    frames = orjson.dumps({"frames": [{"timestamp": ts, "metrics": {"level": 11.5}}]})
    body = frames[:-1] + b" " * (MiB - len(frames)) + b"}"  # exactly the limit, inflated
    reply = client.post(f"/v2/thing/{org['thing']}/data", content=gzip.compress(body),
                        headers={"Content-Encoding": "gzip", **WAIT})
    assert reply.status_code == 200, reply.text
    reply = client.post(f"/v2/thing/{org['thing']}/data", content=gzip.compress(body + b" "),
                        headers={"Content-Encoding": "gzip"})
    assert reply.status_code == 413, reply.text


# ----- refusals, in each dialect's shape


def _routes(org: dict) -> list[tuple[str, dict]]:
    return [(f"/v2/thing/{org['thing']}/data", {}), ("/api/ingest", {"X-Stream": "tanks"}),
            (f"/v1/assets/{org['thing']}/data", {}), ("/restapi/datasource/insert", {}),
            (f"/api/v1/ingest/ingest/{org['harbor']}", {})]


def _code(body: dict) -> str:
    """The error code, whichever dialect's shape it comes in."""
    if "success" in body:  # streams
        return body["error"]["code"]
    if isinstance(body.get("error"), dict):  # Sluice's own
        return body["error"]["code"]
    if "detail" in body:  # harbor
        return body["code"]
    if "status" in body:  # assets: snake case
        return body["code"].upper()
    return body["error"]  # data sources


def test_an_unknown_coding_is_415_in_each_dialects_shape(org, client):
    for path, headers in _routes(org):
        for encoding in ("br", "deflate", "gzip, zstd"):
            reply = client.post(path, content=b"{}", headers={"Content-Encoding": encoding, **headers})
            assert reply.status_code == 415, (path, reply.text)
            assert _code(reply.json()) == "UNSUPPORTED_CONTENT_ENCODING", (path, reply.text)
            assert reply.headers["Accept-Encoding"] == "gzip, zstd"
    assert client.post("/api/ingest", content=b"{}", headers={"Content-Encoding": "br", "X-Stream": "tanks"}
                       ).json()["success"] is False
    assert client.post("/v1/assets/data", content=b"{}", headers={"Content-Encoding": "br"}
                       ).json()["code"] == "unsupported_content_encoding"


def test_identity_is_no_coding(org, client):
    reply = client.post(f"/v2/thing/{org['thing']}/data", headers={"Content-Encoding": "identity"},
                        content=orjson.dumps({"frames": [{"timestamp": TS, "metrics": {"level": 1.0}}]}))
    assert reply.status_code == 202, reply.text


@pytest.mark.parametrize("coding,body,reason", [
    ("gzip", b'{"frames": []}', "incorrect header check"),  # plain JSON labelled gzip
    ("gzip", gzip.compress(b'{"frames": [{"timestamp": 1}]}')[:-6], "truncated"),
    ("zstd", b"\x28\xb5\x2f\xfd garbage", "not valid zstd data"),
])
def test_a_corrupt_body_is_400_saying_why(org, client, coding, body, reason):
    for path, headers in _routes(org):
        reply = client.post(path, content=body, headers={"Content-Encoding": coding, **headers})
        assert reply.status_code == 400, (path, reply.text)
        assert _code(reply.json()) == "INVALID_PAYLOAD", (path, reply.text)
        assert f"not valid {coding} data" in reply.text and reason in reply.text, (path, reply.text)
