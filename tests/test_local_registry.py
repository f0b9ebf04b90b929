"""The local schema registry: a real Apicurio Registry speaking the Confluent API on loopback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from sluice.local_registry import LocalRegistry, LocalRegistryError, answers
from tests.conftest import eventually
from tests.kafka_fixture import free_http_and_kafka_ports, free_port

FRAME_SCHEMA = json.dumps({
    "type": "record", "name": "Probe", "namespace": "sluice.test",
    "fields": [{"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-millis"}}],
})


def test_a_registered_schema_reads_back_by_id(schema_registry):
    client = SchemaRegistryClient({"url": schema_registry})
    schema_id = client.register_schema("probe-value", Schema(FRAME_SCHEMA, "AVRO"))
    fresh = SchemaRegistryClient({"url": schema_registry})  # no cache: asks the registry
    assert json.loads(fresh.get_schema(schema_id).schema_str) == json.loads(FRAME_SCHEMA)
    assert "probe-value" in fresh.get_subjects()


def test_a_restarted_registry_keeps_its_schema_ids(tmp_path):
    # Producers and processors cache schema ids: after a restart an id must still mean the same schema.
    registry = LocalRegistry(tmp_path, port=free_port())
    with registry:
        schema_id = SchemaRegistryClient({"url": registry.url}).register_schema(
            "probe-value", Schema(FRAME_SCHEMA, "AVRO"))
    with registry:
        client = SchemaRegistryClient({"url": registry.url})
        assert json.loads(client.get_schema(schema_id).schema_str) == json.loads(FRAME_SCHEMA)
        other = client.register_schema("other-value", Schema(FRAME_SCHEMA.replace("Probe", "Other"), "AVRO"))
        assert other != schema_id


def test_a_registry_killed_right_after_registering_keeps_the_ids_it_gave(tmp_path):
    registry = LocalRegistry(tmp_path, port=free_port())
    with registry:
        client = SchemaRegistryClient({"url": registry.url})
        ids = [client.register_schema(f"s{i}-value", Schema(FRAME_SCHEMA.replace("Probe", f"P{i}"), "AVRO"))
               for i in range(3)]
        os.killpg(registry.pid, signal.SIGKILL)  # no shutdown: nothing is flushed on the way out
        registry.stop()
    with registry:
        client = SchemaRegistryClient({"url": registry.url})
        assert [json.loads(client.get_schema(i).schema_str)["name"] for i in ids] == ["P0", "P1", "P2"]


def test_a_taken_port_is_a_clear_error(tmp_path):
    import socket

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(LocalRegistryError, match=f"127.0.0.1:{port} is already in use"):
            LocalRegistry(tmp_path, port=port).start()


def listening_addresses(pid: int) -> list[str]:
    """The local addresses (host:port) process `pid` listens on, from `ss`."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3] for line in out.splitlines() if f"pid={pid}," in line]


def registry_child(state: Path) -> dict:
    status = json.loads((state / "run" / "status.json").read_text())
    return status["children"].get("registry", {})


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs `ss` to list listening sockets")
def test_up_with_registry_serves_it_on_loopback_restarts_it_and_stops_it(tmp_path):
    http_port, kafka_port = free_http_and_kafka_ports()
    registry_port = free_port()
    state = tmp_path / "state"
    env = {**os.environ, "SLUICE_STATE_DIR": str(state), "SLUICE_KAFKA_PORT": str(kafka_port),
           "SLUICE_REGISTRY_PORT": str(registry_port), "SLUICE_CLICKHOUSE_PORT": str(free_port())}
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_URL", "SLUICE_ADMIN_KEY", "SLUICE_TOPIC_PREFIX",
                 "SLUICE_SCHEMA_REGISTRY_URL", "SLUICE_WITH_REGISTRY"):
        env.pop(name, None)
    url = f"http://127.0.0.1:{registry_port}/apis/ccompat/v7"
    with open(tmp_path / "up.log", "ab") as log:
        up = subprocess.Popen([sys.executable, "-m", "sluice.cli", "up", "--port", str(http_port),
                               "--with-registry"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        def ready() -> bool:
            assert up.poll() is None, "sluice up exited early; see " + str(tmp_path / "up.log")
            try:
                return httpx.get(f"http://127.0.0.1:{http_port}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        eventually(ready, timeout=180, interval=0.5)
        schema_id = SchemaRegistryClient({"url": url}).register_schema("probe-value", Schema(FRAME_SCHEMA, "AVRO"))
        pid = registry_child(state)["pid"]
        addresses = listening_addresses(pid)
        assert addresses and all(a.rsplit(":", 1)[0] in ("127.0.0.1", "[::ffff:127.0.0.1]") for a in addresses), \
            addresses
        # Every child is told where the registry is.
        processor = json.loads((state / "run" / "status.json").read_text())["children"]["processor"]["pid"]
        environ = Path(f"/proc/{processor}/environ").read_bytes().split(b"\0")
        assert f"SLUICE_SCHEMA_REGISTRY_URL={url}".encode() in environ

        os.kill(pid, signal.SIGKILL)  # a crash: the supervisor starts it again, and ids keep their schemas
        eventually(lambda: registry_child(state).get("restarts") == 1 and registry_child(state)["pid"] != pid,
                   timeout=60, interval=0.5)
        eventually(lambda: answers(url), timeout=60, interval=0.5)
        fresh = SchemaRegistryClient({"url": url})
        assert json.loads(fresh.get_schema(schema_id).schema_str) == json.loads(FRAME_SCHEMA)
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(90)
    assert code == 0
    assert not answers(url), "the registry outlived sluice up"


@pytest.fixture()
def app_server(tmp_path):
    """A local HTTP server offering a tiny stand-in for the registry app archive; counts downloads."""
    import hashlib
    import http.server
    import io
    import tarfile
    import threading

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        jar = b"not really a jar"
        info = tarfile.TarInfo("quarkus-run.jar")
        info.size = len(jar)
        tar.addfile(info, io.BytesIO(jar))
    archive = buffer.getvalue()
    served = {"count": 0, "cut": False}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            served["count"] += 1
            body = archive[: len(archive) // 2] if served["cut"] else archive
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/app.tar.gz", hashlib.sha256(archive).hexdigest(), served
    server.shutdown()


def test_a_cut_download_is_refused_and_an_unfinished_app_is_fetched_again(tmp_path, app_server):
    from sluice.local_registry import ensure_app

    url, sha256, served = app_server
    served["cut"] = True  # the connection drops halfway: the checksum cannot match
    with pytest.raises(LocalRegistryError, match="SHA-256"):
        ensure_app(tmp_path, url, sha256)
    assert not any(tmp_path.glob("*/app"))

    served["cut"] = False
    app = ensure_app(tmp_path, url, sha256)
    assert (app / "quarkus-run.jar").is_file() and served["count"] == 2
    assert ensure_app(tmp_path, url, sha256) == app and served["count"] == 2  # complete: no download

    (app / ".sluice-app-complete").unlink()  # as if unpacking had been interrupted
    (app / "quarkus-run.jar").unlink()
    assert (ensure_app(tmp_path, url, sha256) / "quarkus-run.jar").is_file() and served["count"] == 3
