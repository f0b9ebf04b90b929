"""`sluice up` as a user runs it: its own broker, ready, stopped by a signal with
nothing left behind, and restarted with the catalog and readings intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import eventually
from tests.kafka_fixture import free_http_and_kafka_ports, free_port


def processes_of(state_dir: Path) -> list[int]:
    """Pids whose command line or environment names this state folder."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            text = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except OSError:
            continue
        if str(state_dir).encode() in text:
            found.append(int(proc.name))
    return found


class Up:
    """`sluice up` on `state_dir` and the ports; `env`: more variables for it; its output goes
    to `<state_dir's parent>/<label>-up.log` (label: the state folder's name unless given)."""

    def __init__(self, state_dir: Path, http_port: int, kafka_port: int, label: str | None = None,
                 **env: str) -> None:
        self.state_dir, self.url = state_dir, f"http://127.0.0.1:{http_port}"
        env = {**os.environ, "SLUICE_STATE_DIR": str(state_dir), "SLUICE_KAFKA_PORT": str(kafka_port),
               "SLUICE_CLICKHOUSE_PORT": str(free_port()), **env}
        for name in ("KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_URL", "SLUICE_ADMIN_KEY", "SLUICE_TOPIC_PREFIX"):
            env.pop(name, None)
        self.log_path = state_dir.parent / f"{label or state_dir.name}-up.log"
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "sluice.cli", "up", "--port", str(http_port)],
                                        env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def ready(self) -> bool:
        assert self.process.poll() is None, "sluice up exited early"
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, sig: int) -> int:
        self.process.send_signal(sig)
        return self.process.wait(60)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture()
def ports():
    http, kafka = free_http_and_kafka_ports()
    return http, kafka


def test_up_serves_stops_cleanly_and_restarts_with_data(tmp_path, ports):
    state = tmp_path / "state"
    up = Up(state, *ports)
    try:
        eventually(up.ready, timeout=120, interval=0.5)
        key = (state / "admin-key").read_text().strip()
        headers = {"X-Api-Key": key}
        metric = httpx.post(f"{up.url}/v2/definitions/metrics", headers=headers, timeout=30,
                            json={"name": "soc", "dataType": "Double", "defaultAggregation": "Last"}).json()
        kind = httpx.post(f"{up.url}/v2/definitions/thing-types", headers=headers, timeout=30,
                          json={"displayName": "Battery", "metricIds": [metric["id"]]}).json()
        site = httpx.post(f"{up.url}/v2/sites", headers=headers, json={"name": "s"}, timeout=30).json()
        thing = httpx.post(f"{up.url}/v2/sites/{site['id']}/things", headers=headers, timeout=30,
                           json={"thingName": "A1", "thingTypeId": kind["id"]}).json()
        reply = httpx.post(f"{up.url}/v2/thing/{thing['id']}/data", headers=headers, timeout=30,
                           json={"frames": [{"timestamp": 1718884800000, "metrics": {"SOC": 42.5}}]})
        assert reply.status_code == 202
        reader = httpx.post(f"{up.url}/v2/api-keys", headers=headers, timeout=30,
                            json={"name": "reader", "scopes": ["read"]}).json()["key"]
        latest = f"{up.url}/v2/things/{thing['id']}/latest-event"
        eventually(lambda: httpx.get(latest, headers=headers).json()["metrics"] == {"soc": 42.5})
    finally:
        code = up.stop(signal.SIGINT)
    assert code == 0
    time.sleep(0.5)
    assert processes_of(state) == [], "sluice up left processes behind"

    # Second start on the same state: same key, catalog and readings still there.
    again = Up(state, *ports)
    try:
        eventually(again.ready, timeout=120, interval=0.5)
        assert httpx.get(f"{again.url}/v2/definitions/metrics/{metric['id']}", headers=headers).json()[
            "name"] == "soc"
        assert httpx.get(latest, headers=headers).json()["metrics"] == {"soc": 42.5}
        assert httpx.get(latest, headers={"X-Api-Key": reader}).status_code == 200  # keys survive too
        version = httpx.get(f"{again.url}/v2/definitions/thing-types/{kind['id']}", headers=headers).json()
        assert version["versionId"] == kind["versionId"]
    finally:
        assert again.stop(signal.SIGTERM) == 0
    time.sleep(0.5)
    assert processes_of(state) == []
