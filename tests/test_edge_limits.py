"""The edge's limits: body size per route class, catalog field lengths, the structural
check of ingest bodies, slow clients and the per-IP connection cap."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from tests.conftest import session_settings
from tests.seed import SEED_FRAMES

MiB = 1024 * 1024


def error_of(reply: httpx.Response, status: int, code: str) -> dict:
    assert reply.status_code == status, reply.text[:300]
    error = reply.json()["error"]
    assert error["code"] == code and set(error) == {"code", "message", "details"}, error
    return error


# ----- body size, one limit per route class


def test_each_route_class_has_its_own_body_limit(api, stack, battery):
    # 128 KiB: well within the ingest limit, twice the limit of every other route.
    frames = json.dumps(SEED_FRAMES).encode()
    body = frames[:-1] + b" " * (128 * 1024 - len(frames)) + b"}"
    headers = {"Content-Type": "application/json"}
    assert api.post(f"/v2/thing/{battery}/data", content=body, headers=headers).status_code == 202
    error = error_of(api.post("/v2/sites", content=body, headers=headers), 413, "PAYLOAD_TOO_LARGE")
    assert error["details"]["limit"] == stack.settings.max_api_body_bytes == 64 * 1024
    huge = b'{"frames": [' + b" " * MiB + b"]}"
    error = error_of(api.post(f"/v2/thing/{battery}/data", content=huge, headers=headers), 413, "PAYLOAD_TOO_LARGE")
    assert error["details"]["limit"] == stack.settings.max_body_bytes == MiB


@pytest.mark.parametrize("path", ["/v2/sites", "/v2/definitions/metrics", "/v2/api-keys", "/v2/admin/sql"])
def test_other_routes_take_the_smaller_limit(api, stack, path):
    body = {"name": "x" * (stack.settings.max_api_body_bytes + 1)}
    error = error_of(api.post(path, json=body), 413, "PAYLOAD_TOO_LARGE")
    assert error["details"]["limit"] == stack.settings.max_api_body_bytes == 65536


def test_a_streamed_catalog_body_is_counted_while_it_streams(api, stack):
    def chunks():
        yield b'{"name": "'
        for _ in range(200):  # 2 MB, no Content-Length: only counting can stop it
            yield b"x" * 10_000
        yield b'"}'

    error = error_of(api.post("/v2/sites", content=chunks(), headers={"Content-Type": "application/json"}),
                     413, "PAYLOAD_TOO_LARGE")
    assert error["details"]["limit"] == stack.settings.max_api_body_bytes


# ----- catalog field lengths (every entity is held in every service's memory)


@pytest.mark.parametrize("path,body,field", [
    ("/v2/definitions/metrics", {"name": "m1", "dataType": "Double", "defaultAggregation": "Last",
                                 "description": "d" * 2001}, "description"),
    ("/v2/definitions/metrics", {"name": "m2", "dataType": "Double", "defaultAggregation": "Last",
                                 "unitLabel": "u" * 51}, "unitLabel"),
    ("/v2/definitions/metrics", {"name": "m3", "dataType": "String", "defaultAggregation": "Last",
                                 "enumValues": [f"v{i}" for i in range(1001)]}, "enumValues"),
    ("/v2/sites", {"name": "n" * 201}, "name"),
    ("/v2/definitions/thing-types", {"displayName": "T", "metricIds": ["mdef_x"],
                                     "propertyDefinitions": [{"name": f"p{i}", "valueType": "long"}
                                                             for i in range(101)]}, "propertyDefinitions"),
])
def test_catalog_fields_are_bounded(api, path, body, field):
    error = error_of(api.post(path, json=body), 400, "INVALID_PAYLOAD")
    assert error["details"]["field"] == field


def test_thing_properties_are_a_bounded_map_of_scalars(api, battery_type):
    site, thing_type = battery_type
    things = f"/v2/sites/{site}/things"
    many = {f"p{i}": 1 for i in range(101)}
    error = error_of(api.post(things, json={"thingName": "T", "thingTypeId": thing_type, "properties": many}),
                     400, "INVALID_PAYLOAD")
    assert error["details"]["field"] == "properties"
    nested = {"capacity": {"deep": ["x" * 1000] * 50}}
    error = error_of(api.post(things, json={"thingName": "T", "thingTypeId": thing_type, "properties": nested}),
                     400, "INVALID_PAYLOAD")
    assert error["details"]["field"].startswith("properties.capacity")


# ----- the structural check of ingest bodies, answered at once even without a wait


@pytest.mark.parametrize("body,field", [
    (b'{"frames": [', "body"),
    (b"", "body"),
    (b"[1, 2]", "body"),
    (b'"frames"', "body"),
    (b'{"readings": []}', "frames"),
    (b'{"frames": {"timestamp": 1}}', "frames"),
    (b'{"frames": []}', "frames"),
])
def test_malformed_bodies_are_400_in_async_mode(api, battery, body, field):
    reply = api.post(f"/v2/thing/{battery}/data", content=body, headers={"Content-Type": "application/json"})
    error = error_of(reply, 400, "INVALID_PAYLOAD")
    assert error["details"]["field"] == field and error["details"]["reason"]


# ----- slow clients, on a stack of its own with tight deadlines

HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 3.0
PER_IP = 6


@pytest.fixture(scope="module")
def tight(kafka_bootstrap, tmp_path_factory):
    from sluice.stack import Stack
    from tests.seed import register_battery, register_battery_type

    settings = session_settings(kafka_bootstrap, tmp_path_factory.mktemp("tight"), header_timeout_s=HEADER_TIMEOUT_S,
                                body_timeout_s=BODY_TIMEOUT_S, max_connections_per_ip=PER_IP)
    running = Stack(settings)
    running.start()
    try:
        with httpx.Client(base_url=running.url, headers={"X-Api-Key": running.settings.admin_key},
                          timeout=30) as api:
            thing = register_battery(api, *register_battery_type(api))
        yield running, thing
    finally:
        running.stop()


def connect(stack) -> socket.socket:
    return socket.create_connection((stack.settings.http_host, stack.settings.http_port), timeout=10)


def trickle_until_closed(conn: socket.socket, data: bytes, interval: float = 1.0) -> tuple[float, bytes]:
    """Send `data` a byte every `interval` s until the edge closes; (seconds it took, what it answered)."""
    started = time.monotonic()
    conn.settimeout(interval)
    answer = b""
    for byte in data:
        try:
            conn.sendall(bytes([byte]))
            chunk = conn.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            break
        answer += chunk
        if not chunk:
            break
    else:
        pytest.fail("the edge kept the connection open for the whole trickle")
    return time.monotonic() - started, answer


def test_headers_sent_a_byte_a_second_are_cut_off(tight):
    stack, _ = tight
    with connect(stack) as conn:
        request = b"GET /v2/orgs/current HTTP/1.1\r\nHost: edge\r\nX-Api-Key: " + b"k" * 60 + b"\r\n\r\n"
        took, answer = trickle_until_closed(conn, request)
    assert took < HEADER_TIMEOUT_S + 1.5
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "REQUEST_TIMEOUT"


def test_a_silent_connection_is_cut_off(tight):
    stack, _ = tight
    with connect(stack) as conn:
        started = time.monotonic()
        conn.settimeout(HEADER_TIMEOUT_S + 3)
        answer = conn.recv(65536)
    assert time.monotonic() - started < HEADER_TIMEOUT_S + 1.5 and answer.startswith(b"HTTP/1.1 408")


def test_a_trickling_body_is_408_in_the_error_shape(tight):
    stack, thing = tight
    body = json.dumps(SEED_FRAMES).encode()
    with connect(stack) as conn:
        conn.sendall((f"POST /v2/thing/{thing}/data HTTP/1.1\r\nHost: edge\r\nX-Api-Key: {stack.settings.admin_key}"
                      f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode())
        took, answer = trickle_until_closed(conn, body)
    assert took < BODY_TIMEOUT_S + 1.5
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    assert error["code"] == "REQUEST_TIMEOUT" and error["details"]["timeout_s"] == BODY_TIMEOUT_S


def test_one_ip_gets_at_most_its_cap_of_connections(tight):
    stack, _ = tight
    held = [connect(stack) for _ in range(PER_IP)]
    try:
        with connect(stack) as extra:
            answer = extra.recv(65536)
        assert answer.startswith(b"HTTP/1.1 429"), answer[:200]
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "TOO_MANY_CONNECTIONS"
        for conn in held:  # the ones within the cap still work
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: edge\r\n\r\n")
            assert conn.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        for conn in held:
            conn.close()
    time.sleep(0.3)
    with httpx.Client(base_url=stack.url) as client:  # the cap frees up as connections close
        assert client.get("/healthz").status_code == 200


def test_a_client_disconnect_is_one_log_line(tight):
    stack, thing = tight
    log = stack.settings.state_dir / "logs" / "edge.log"
    before = log.stat().st_size
    for path in (f"/v2/thing/{thing}/data", "/v2/sites"):  # the ingest route, and a catalog route
        with connect(stack) as conn:
            conn.sendall((f"POST {path} HTTP/1.1\r\nHost: edge\r\nX-Api-Key: {stack.settings.admin_key}\r\n"
                          "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"frames\"").encode())
            time.sleep(0.3)
    time.sleep(0.5)
    with open(log, "rb") as f:
        f.seek(before)
        written = f.read().decode(errors="replace")
    assert "Traceback" not in written, written
    assert [line for line in written.splitlines() if "disconnected" in line and "POST /v2/thing/" in line]
    assert [line for line in written.splitlines() if "disconnected" in line and "POST /v2/sites" in line]
    assert stack.children and all(c.process.poll() is None for c in stack.children)
