"""The integrations stage on the real stack, with a real Mosquitto and a real HTTP feed on
loopback: MQTT messages acknowledged only once durable, so a SIGKILLed stage loses and
duplicates nothing in ClickHouse; a restarted broker reconnected to by itself; a polled feed
resumed from its durable cursor after a restart, no page skipped, its 429 honoured; a broker
with a password file restarted mid-stream, on MQTT 3.1.1 and 5: every reading once; a broker
over TLS with a private CA's certificate, verified."""

from __future__ import annotations

import http.server
import secrets
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import paho.mqtt.client as paho
import pytest

from sluice.local_mqtt import LocalMosquitto
from tests.conftest import eventually
from tests.kafka_fixture import free_port
from tests.seed import org_with_every_target

DEVICES = 50
PER_DEVICE = 200  # 10,000 messages in all
TELEMETRY = {"name": "telemetry", "target": "ThingData", "records": "[@]",
             "timestamp": {"path": "t", "format": "epochMillis"}, "metrics": {"level": "v"}}


def ok(reply: httpx.Response, status: int = 200) -> dict:
    assert reply.status_code == status, reply.text
    return reply.json()


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory) -> Iterator[LocalMosquitto]:
    broker = LocalMosquitto(tmp_path_factory.mktemp("mqtt"), free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def org(stack) -> dict:
    return org_with_every_target(stack.url, stack.settings.admin_key, "stage")


@pytest.fixture()
def client(stack, org) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": org["key"]}, timeout=30) as api:
        yield api
    stack.check_alive()


def things(client, org, count: int) -> list[str]:
    report = ok(client.post(f"/v2/sites/{org['site']}/things/bulk", json=[
        {"thingName": f"device {n}", "thingTypeId": org["type"]} for n in range(count)]), 207)
    assert report["failed"] == 0
    return [item["id"] for item in report["items"]]


def readings(stack, thing_ids: list[str], since: int) -> int:
    """Readings of the things at or after `since`, once each (FINAL: as ClickHouse keeps them)."""
    query = (f"SELECT count() FROM {stack.settings.database}.readings FINAL WHERE thing_id IN "
             f"({','.join(repr(t) for t in thing_ids)}) AND toUnixTimestamp64Milli(ts) >= {since}")
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": stack.settings.admin_key}, timeout=60) as root:
        return ok(root.post("/v2/admin/sql", json={"sql": query}))["rows"][0][0]


def publisher(broker: LocalMosquitto) -> paho.Client:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"devices-{secrets.token_hex(3)}")
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    return client


def publish(client: paho.Client, device: int, t: int, v: float) -> paho.MQTTMessageInfo:
    return client.publish(f"plant/dev-{device}/telemetry", orjson.dumps({"t": t, "v": v}), qos=1)


def test_mqtt_messages_land_exactly_once_through_a_sigkilled_stage_and_a_restarted_broker(stack, client, org,
                                                                                       mosquitto):
    ids = things(client, org, DEVICES)
    template = ok(client.post("/v2/templates", json={**TELEMETRY, "name": f"telemetry {secrets.token_hex(3)}"}),
                  201)["id"]
    integration = ok(client.post("/v2/integrations", json={
        "name": "plant", "kind": "mqtt", "templateId": template,
        "config": {"url": mosquitto.url, "topics": ["plant/+/telemetry"], "qos": 1},
        "resource": {"from": "message", "expression": "topicLevels[1]"},
        "things": {f"dev-{n}": thing for n, thing in enumerate(ids)}}), 201)
    base = 1_719_000_000_000 + secrets.randbelow(10**6) * 1000
    devices = publisher(mosquitto)
    try:
        # The stage has subscribed (its persistent session exists) once a probe lands.
        eventually(lambda: publish(devices, 0, base - 1, -1.0) and readings(stack, ids[:1], base - 1), timeout=60,
                   interval=1)
        status = eventually(lambda: (s := ok(client.get(f"/v2/integrations/{integration['id']}/status")))
                            ["state"] == "running" and s["messagesOut"] >= 1 and s, timeout=30)
        assert status["instance"] == "integrations" and status["lastSuccessAt"], status

        sent: list[paho.MQTTMessageInfo] = []

        def stream() -> None:
            for n in range(PER_DEVICE):
                for device in range(DEVICES):
                    sent.append(publish(devices, device, base + n, float(n)))

        streaming = threading.Thread(target=stream)
        streaming.start()
        eventually(lambda: len(sent) >= 3000, timeout=60, interval=0.01)
        stack.restart("integrations", signal.SIGKILL)  # mid-stream; the broker keeps what arrives meanwhile
        streaming.join()
        for info in sent:
            info.wait_for_publish(30)
        assert len(sent) == DEVICES * PER_DEVICE
        started = time.monotonic()
        eventually(lambda: readings(stack, ids, base) >= DEVICES * PER_DEVICE, timeout=180, interval=2)
        print(f"10,000 messages landed {time.monotonic() - started:.1f} s after the last publish")
        time.sleep(2)  # any duplicate would be in by now; FINAL keeps one row per key
        assert readings(stack, ids, base) == DEVICES * PER_DEVICE
        # Caught up: nothing durable waits, and the ingest log has every reading (a message produced
        # again after the SIGKILL counts again).
        status = eventually(lambda: (s := ok(client.get(f"/v2/integrations/{integration['id']}/status")))
                            ["lagSeconds"] is not None and s["lagSeconds"] < 10 and s, timeout=30)
        assert status["readingsOut"] >= DEVICES * PER_DEVICE + 1, status

        # The broker restarts (its sessions saved): the stage reconnects by itself and gets what it missed.
        devices.loop_stop()
        devices.disconnect()
        mosquitto.stop()
        mosquitto.start()
        devices = publisher(mosquitto)
        later = base + PER_DEVICE
        infos = [publish(devices, device, later, 1.0) for device in range(DEVICES)]
        for info in infos:
            info.wait_for_publish(30)
        eventually(lambda: readings(stack, ids, later) == DEVICES, timeout=90, interval=1)
    finally:
        devices.loop_stop()
        devices.disconnect()
        client.delete(f"/v2/integrations/{integration['id']}")


class Feed(http.server.ThreadingHTTPServer):
    """A paged feed: `GET /feed?version=N` answers page N and `toVersion` N+1 (the last page: itself);
    the first request of page `limited` is answered 429 with Retry-After: 1."""

    def __init__(self, pages: int, per_page: int, base: int, limited: int) -> None:
        self.pages, self.per_page, self.base, self.limited = pages, per_page, base, limited
        self.requests: list[tuple[float, int | None, int]] = []  # (when, version asked, status answered)
        self.paths: list[tuple[float, str]] = []  # (when, path asked)
        self.slow = 0.1
        super().__init__(("127.0.0.1", free_port()), FeedHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/feed"

    def paths_since(self, moment: float) -> list[str]:
        return [path for t, path in self.paths if t > moment]

    def first_since(self, moment: float, part: str) -> float:
        return next(t for t, path in self.paths if t > moment and part in path)


class FeedHandler(http.server.BaseHTTPRequestHandler):
    server: Feed

    def do_GET(self) -> None:
        asked = parse_qs(urlsplit(self.path).query).get("version", [None])[0]
        version = int(asked) if asked is not None else 0
        feed = self.server
        feed.paths.append((time.monotonic(), self.path))
        time.sleep(feed.slow)
        if version == feed.limited and not any(v == version and s == 429 for _, v, s in feed.requests):
            feed.requests.append((time.monotonic(), version, 429))
            self.send_response(429)
            self.send_header("Retry-After", "1")
            self.end_headers()
            return
        feed.requests.append((time.monotonic(), version, 200))
        page = min(version, feed.pages)
        records = [] if page >= feed.pages else [
            {"device": f"d{n % 5}", "t": feed.base + page * feed.per_page + n, "v": float(n)}
            for n in range(feed.per_page)]
        body = orjson.dumps({"toVersion": str(min(page + 1, feed.pages)), "data": records})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


USERS = {"sluice": "stage-secret", "devices": "device-secret"}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory) -> Iterator[LocalMosquitto]:
    """A Mosquitto that lets in only the users of its password file."""
    broker = LocalMosquitto(tmp_path_factory.mktemp("mqtt-users"), free_port(), users=USERS)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class Devices:
    """A publisher with a persistent session: what it sent while the broker was away, or sent and
    not yet acknowledged, it sends again once reconnected; `acked` are the mids the broker took."""

    def __init__(self, broker: LocalMosquitto) -> None:
        self.acked: set[int] = set()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"devices-{secrets.token_hex(3)}",
                                  clean_session=False)
        self.client.username_pw_set("devices", USERS["devices"])
        self.client.max_inflight_messages_set(1000)
        self.client.reconnect_delay_set(0.2, 1)
        self.client.on_publish = lambda client, userdata, mid, reason_code, properties: self.acked.add(mid)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_a_broker_restarted_mid_stream_with_a_password_file_loses_and_repeats_nothing(stack, client, org, guarded,
                                                                                   protocol):
    devices, per_device = 10, 300  # 3,000 messages, published over about 6 s
    ids = things(client, org, devices)
    template = ok(client.post("/v2/templates", json={**TELEMETRY, "name": f"telemetry {secrets.token_hex(3)}"}),
                  201)["id"]
    spec = {"name": f"guarded {protocol}", "kind": "mqtt", "templateId": template,
            "config": {"url": guarded.url, "topics": ["plant/+/telemetry"], "qos": 1, "protocol": protocol,
                       "clientId": f"sluice-{secrets.token_hex(4)}", "username": "sluice", "password": "wrong"},
            "resource": {"from": "message", "expression": "topicLevels[1]"},
            "things": {f"dev-{n}": thing for n, thing in enumerate(ids)}}
    # A wrong password: refused by the broker, and the status says so.
    refused = ok(client.post("/v2/integrations", json=spec), 201)
    status = eventually(lambda: (s := ok(client.get(f"/v2/integrations/{refused['id']}/status")))
                        .get("lastError") and s, timeout=30)
    assert "refused" in status["lastError"]["reason"] and "wrong" not in orjson.dumps(status).decode(), status
    assert client.delete(f"/v2/integrations/{refused['id']}").status_code == 204

    spec["config"] = {**spec["config"], "password": USERS["sluice"]}
    integration = ok(client.post("/v2/integrations", json=spec), 201)
    base = 1_719_100_000_000 + secrets.randbelow(10**6) * 1000
    publisher = Devices(guarded)
    try:
        eventually(lambda: publish(publisher.client, 0, base - 1, -1.0) and readings(stack, ids[:1], base - 1),
                   timeout=60, interval=1)
        sent: list[paho.MQTTMessageInfo] = []

        def stream() -> None:
            for n in range(per_device):
                for device in range(devices):
                    sent.append(publish(publisher.client, device, base + n, float(n)))
                time.sleep(0.02)

        streaming = threading.Thread(target=stream)
        streaming.start()
        eventually(lambda: len(publisher.acked) >= 1000, timeout=60, interval=0.01)
        guarded.stop()  # mid-stream: the devices keep publishing while it is down; it saves its sessions
        guarded.start()
        assert streaming.is_alive(), "the stream ended before the broker was back"
        streaming.join()
        eventually(lambda: {info.mid for info in sent} <= publisher.acked, timeout=60, interval=0.5)
        eventually(lambda: readings(stack, ids, base) >= devices * per_device, timeout=120, interval=1)
        time.sleep(2)  # any duplicate would be in by now; FINAL keeps one row per key
        assert readings(stack, ids, base) == devices * per_device
        status = ok(client.get(f"/v2/integrations/{integration['id']}/status"))
        assert status["lastError"] and "disconnected" in status["lastError"]["reason"], status  # it saw the restart
    finally:
        publisher.stop()



def private_ca(folder) -> tuple:
    """A CA of our own and a broker certificate it signed for 127.0.0.1: (CA PEM file, certificate, key)."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)

    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Plant CA")
    openssl("req", *curve, "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=127.0.0.1")
    (folder / "broker.ext").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "broker.pem", "-days", "2", "-extfile", "broker.ext")
    return folder / "ca.pem", folder / "broker.pem", folder / "broker.key"


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory) -> Iterator[tuple[LocalMosquitto, str]]:
    """A Mosquitto that speaks only TLS, with a certificate of a private CA; and that CA's PEM."""
    folder = tmp_path_factory.mktemp("mqtt-tls")
    ca, certificate, key = private_ca(folder)
    broker = LocalMosquitto(folder, free_port(), tls=(certificate, key))
    broker.start()
    try:
        yield broker, ca.read_text()
    finally:
        broker.stop()


def test_mqtt_over_tls_verifies_the_broker_by_the_ca_given(stack, client, org, tls_broker):
    broker, ca = tls_broker
    ids = things(client, org, 3)
    template = ok(client.post("/v2/templates", json={**TELEMETRY, "name": f"telemetry {secrets.token_hex(3)}"}),
                  201)["id"]
    spec = {"name": "tls", "kind": "mqtt", "templateId": template,
            "config": {"url": broker.url, "topics": ["plant/+/telemetry"], "clientId": f"sluice-{secrets.token_hex(4)}"},
            "resource": {"from": "message", "expression": "topicLevels[1]"},
            "things": {f"dev-{n}": thing for n, thing in enumerate(ids)}}
    # Without the CA, the system's CAs do not know the broker's certificate: not connected, and the status says why.
    untrusted = ok(client.post("/v2/integrations", json=spec), 201)
    status = eventually(lambda: (s := ok(client.get(f"/v2/integrations/{untrusted['id']}/status")))
                        .get("lastError") and s, timeout=30)
    assert "CERTIFICATE_VERIFY_FAILED" in status["lastError"]["reason"], status
    assert client.delete(f"/v2/integrations/{untrusted['id']}").status_code == 204

    spec["config"] = {**spec["config"], "caCertificate": ca}
    integration = ok(client.post("/v2/integrations", json=spec), 201)
    assert integration["config"]["caCertificate"] == ca  # a certificate is public: shown, unlike a password
    devices = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"devices-{secrets.token_hex(3)}")
    devices.tls_set_context(ssl.create_default_context(cadata=ca))
    devices.connect("127.0.0.1", broker.port)
    devices.loop_start()
    base = 1_721_000_000_000 + secrets.randbelow(10**6) * 1000
    try:
        # Until the stage has subscribed, a message reaches nobody: publish a probe until one lands.
        eventually(lambda: publish(devices, 0, base - 1, -1.0) and readings(stack, ids[:1], base - 1),
                   timeout=60, interval=1)
        for n in range(20):
            for device in range(3):
                publish(devices, device, base + n, float(n))
        eventually(lambda: readings(stack, ids, base) == 60, timeout=60, interval=0.5)
    finally:
        devices.loop_stop()
        devices.disconnect()


def test_a_polled_feed_resumes_from_its_durable_cursor_after_a_restart(stack, client, org):
    pages, per_page = 30, 20
    base = 1_720_000_000_000 + secrets.randbelow(10**6) * 1000
    feed = Feed(pages, per_page, base, limited=5)
    threading.Thread(target=feed.serve_forever, daemon=True).start()
    ids = things(client, org, 5)
    template = ok(client.post("/v2/templates", json={
        **TELEMETRY, "name": f"feed {secrets.token_hex(3)}", "records": "data"}), 201)["id"]
    integration = ok(client.post("/v2/integrations", json={
        "name": "vendor feed", "kind": "http_poll", "templateId": template,
        "config": {"url": feed.url, "intervalSeconds": 1, "headers": {"Authorization": "Bearer feed-secret"},
                   "cursor": {"in": "query", "name": "version", "path": "toVersion"}},
        "resource": {"from": "record", "expression": "device"},
        "things": {f"d{n}": thing for n, thing in enumerate(ids)}}), 201)
    assert "feed-secret" not in orjson.dumps(integration).decode()
    try:
        eventually(lambda: any(v is not None and v >= 12 for _, v, _ in feed.requests), timeout=60, interval=0.05)
        stack.restart("integrations", signal.SIGKILL)  # mid-feed
        eventually(lambda: readings(stack, ids, base) == pages * per_page, timeout=120, interval=1)
        time.sleep(2)
        assert readings(stack, ids, base) == pages * per_page  # exactly once
        answered = [v for _, v, s in feed.requests if s == 200]
        assert set(range(pages)) <= set(answered)  # no page skipped
        # Resumed, not started over: the first pages were requested once.
        assert answered.count(0) == 1 and answered.count(1) == 1
        # The 429's Retry-After was waited out.
        limited_at = next(t for t, v, s in feed.requests if s == 429)
        retried_at = next(t for t, v, s in feed.requests if v == 5 and s == 200)
        assert retried_at - limited_at >= 1.0
        eventually(lambda: ok(client.get(f"/v2/integrations/{integration['id']}/status")).get("cursor") == str(pages),
                   timeout=30)
    finally:
        client.delete(f"/v2/integrations/{integration['id']}")
        feed.shutdown()


def test_two_instances_run_each_integration_once_and_one_takes_over_when_the_owner_dies(stack, client, org):
    # A feed whose cursor never moves: polled every second by whichever instance owns it.
    feed = Feed(pages=0, per_page=0, base=0, limited=-1)
    feed.slow = 0
    threading.Thread(target=feed.serve_forever, daemon=True).start()
    template = ok(client.post("/v2/templates", json={
        **TELEMETRY, "name": f"idle {secrets.token_hex(3)}", "records": "data"}), 201)["id"]
    if not any(child.name == "integrations-2" for child in stack.children):
        stack.add("integrations", "integrations-2")
    created = [ok(client.post("/v2/integrations", json={
        "name": f"idle {n}", "kind": "http_poll", "templateId": template,
        "config": {"url": f"{feed.url}?integration={n}", "intervalSeconds": 1},
        "resource": {"from": "record", "expression": "device"}}), 201)["id"] for n in range(8)]
    try:
        def owners() -> dict[str, str]:
            found = {i: ok(client.get(f"/v2/integrations/{i}/status")).get("instance") for i in created}
            return found if all(found.values()) else {}

        # Both instances run some, none runs one twice: each integration asks once a second.
        eventually(lambda: set(owners().values()) == {"integrations", "integrations-2"}, timeout=90, interval=1)
        time.sleep(3)
        window = time.monotonic()
        time.sleep(4)
        recent = [t for t, _, _ in feed.requests if t > window]
        assert len(recent) <= 8 * 5, len(recent)  # 8 integrations, 1 s apart, over 4 s (and a margin)

        owner = owners()[created[0]]
        stack._child(owner).process.kill()
        killed_at = time.monotonic()
        survivor = ({"integrations", "integrations-2"} - {owner}).pop()
        eventually(lambda: set(owners().values()) == {survivor}, timeout=60, interval=0.5)
        # Every integration asked again after its owner died: the takeover's duration. The survivor
        # reports an integration as its own when it starts its runner, a moment before the first poll.
        def asked() -> set[int]:
            return {int(parse_qs(urlsplit(path).query)["integration"][0]) for path in feed.paths_since(killed_at)}

        eventually(lambda: asked() == set(range(8)), timeout=20, interval=0.5)
        print(f"taken over {feed.first_since(killed_at, 'integration=0') - killed_at:.1f} s after the SIGKILL")
        assert feed.first_since(killed_at, "integration=0") - killed_at < 20
    finally:
        for integration_id in created:
            client.delete(f"/v2/integrations/{integration_id}")
        for child in list(stack.children):
            if child.name in ("integrations", "integrations-2") and child.process.poll() is not None:
                stack.restart(child.name)
        feed.shutdown()
