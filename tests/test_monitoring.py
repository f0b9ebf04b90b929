"""Prometheus (Debian's) watching a real `sluice up` with the config `sluice monitoring
prometheus-config` prints and the shipped alert rules: on a healthy stack every target is
up and no alert is firing or pending for a minute; a processor that stops answering
(SIGSTOP: still running for the supervisor, so not restarted, but dead to scrapes) fires
its alert. Prometheus listens on loopback, keeps its data under the test's tmp folder,
and scrapes and evaluates every second so this takes about three minutes, not fifteen."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import eventually
from tests.kafka_fixture import free_http_and_kafka_ports, free_port
from tests.seed import SEED_FRAMES, register_battery, register_battery_type
from tests.test_sluice_up import Up
from tests.test_state_folder import START_S, sluice

RULES = Path(__file__).resolve().parent.parent / "deploy" / "alerts.yml"
HEALTHY_S = 60
STAGE_DOWN_FOR_S = 60  # SluiceStageDown's `for:`


def prometheus_binary() -> str:
    """Debian's prometheus; installed here when missing if we are root with apt, else the test skips."""
    found = shutil.which("prometheus")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"]
        if subprocess.run(install, env=env, capture_output=True, timeout=600).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
            subprocess.run(install, env=env, capture_output=True, timeout=600)
        found = shutil.which("prometheus")
    if found is None:
        pytest.skip("Debian's prometheus is not installed and could not be (apt-get install prometheus, as root)")
    return found


class Prometheus:
    """A Prometheus server on a loopback port, its data and log in `folder`."""

    def __init__(self, binary: str, config: Path, folder: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        folder.mkdir(parents=True, exist_ok=True)
        self.log_path = folder / "prometheus.log"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
                 f"--web.listen-address={self.url.removeprefix('http://')}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def ready(self) -> bool:
        assert self.process.poll() is None, self.log_path.read_text(errors="replace")[-3000:]
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def api(self, path: str, **params: str):
        reply = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=5)
        reply.raise_for_status()
        return reply.json()["data"]

    def targets(self) -> dict[str, str]:
        """{job: health} of every active target ("up", "unknown", or "down: " and the scrape's error)."""
        return {t["labels"]["job"]: t["health"] if t["health"] != "down" else f"down: {t['lastError']}"
                for t in self.api("targets", state="active")["activeTargets"]}

    def alerts(self) -> list[dict]:
        """Alerts pending or firing, each its labels and state."""
        return [{**a["labels"], "state": a["state"]} for a in self.api("alerts")["alerts"]]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture()
def monitored(tmp_path):
    """(the running `sluice up`, Prometheus watching it with the generated config)."""
    binary = prometheus_binary()
    http, kafka = free_http_and_kafka_ports()
    state = tmp_path / "state"
    # The liveness check would kill and restart the SIGSTOPped processor after 30 s (a wedged child):
    # here it must stay down for its alert's minute.
    up = Up(state, http, kafka, label="monitored", SLUICE_PROCESSOR_METRICS_PORT=str(free_port()),
            SLUICE_LIVENESS_TIMEOUT_S="600")
    prometheus = None
    try:
        eventually(lambda: up.ready() and (state / "run" / "endpoints.json").exists(), timeout=START_S,
                   interval=0.5)
        config = tmp_path / "prometheus.yml"
        made = sluice("monitoring", "prometheus-config", "--interval", "1s", "--rules", str(RULES),
                      "--out", str(config), cwd=tmp_path, SLUICE_STATE_DIR=str(state))
        assert made.returncode == 0, made.stderr
        prometheus = Prometheus(binary, config, tmp_path / "prometheus")
        eventually(prometheus.ready, timeout=60, interval=0.5)
        yield up, prometheus
    finally:
        processor = children(state).get("processor", {}).get("pid")
        if processor:
            os.kill(processor, signal.SIGCONT)  # a stopped child would sit out the stack's SIGTERM
        if prometheus is not None:
            prometheus.stop()
        if up.process.poll() is None:
            up.stop(signal.SIGTERM)


def diagnosis(state: Path) -> str:
    """What the stack's supervisor and its stages' logs say, for a failure's message."""
    tails = {log.stem: log.read_text(errors="replace").splitlines()[-15:] for log in (state / "logs").glob("*.log")}
    return json.dumps({"children": children(state), "logs": tails}, indent=1)


def children(state: Path) -> dict:
    try:
        return json.loads((state / "run" / "status.json").read_text())["children"]
    except (OSError, ValueError, KeyError):
        return {}


def test_prometheus_sees_a_healthy_stack_quiet_and_a_stopped_processor_alerting(monitored):
    up, prometheus = monitored
    # `sluice up` wrote the same targets for its state folder (at the default interval).
    written = yaml.safe_load((up.state_dir / "run" / "prometheus.yml").read_text())
    generated = yaml.safe_load((up.state_dir.parent / "prometheus.yml").read_text())
    assert written["scrape_configs"] == generated["scrape_configs"]
    assert [job["job_name"] for job in generated["scrape_configs"]] == ["sluice-edge", "sluice-processor",
                                                                       "sluice-integrations"]

    # Every rule of the shipped file is loaded and evaluated without error.
    shipped = {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}

    def evaluated() -> dict[str, str]:
        rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"] if r["type"] == "alerting"]
        return {r["name"]: r["health"] for r in rules} if all(r["health"] != "unknown" for r in rules) else {}

    assert eventually(evaluated, timeout=30) == {name: "ok" for name in shipped}
    quiet = ({"sluice-edge": "up", "sluice-processor": "up", "sluice-integrations": "up"}, [])
    deadline = time.monotonic() + 30  # at start, absent() holds until the first scrape
    while (seen := (prometheus.targets(), prometheus.alerts())) != quiet and time.monotonic() < deadline:
        time.sleep(0.5)
    assert seen == quiet

    key = (up.state_dir / "admin-key").read_text().strip()
    with httpx.Client(base_url=up.url, headers={"X-Api-Key": key}, timeout=30) as api:
        thing = register_battery(api, *register_battery_type(api))
        until = time.monotonic() + HEALTHY_S
        sent = 0
        while time.monotonic() < until:  # some traffic through every stage, watched the whole minute
            frames = {"frames": [{**SEED_FRAMES["frames"][0], "timestamp": 1718884800000 + sent * 1000}]}
            assert api.post(f"/v2/thing/{thing}/data", json=frames).status_code == 202
            sent += 1
            assert (prometheus.targets(), prometheus.alerts()) == quiet, diagnosis(up.state_dir)
            time.sleep(1)

    # The edge exported the topics' partition health, all healthy on one broker.
    for metric in ("sluice_kafka_offline_partitions", "sluice_kafka_under_replicated_partitions"):
        series = {s["metric"]["topic"]: s["value"][1] for s in prometheus.api("query", query=metric)["result"]}
        assert {"sluice.raw", "sluice.frames", "sluice.results", "sluice.catalog"} <= set(series), series
        assert set(series.values()) == {"0"}, series

    processor = children(up.state_dir)["processor"]["pid"]
    os.kill(processor, signal.SIGSTOP)
    stopped_at = time.monotonic()
    wanted = {"alertname": "SluiceStageDown", "job": "sluice-processor", "state": "firing"}
    alerts = eventually(lambda: [a for a in prometheus.alerts() if wanted.items() <= a.items()],
                        timeout=STAGE_DOWN_FOR_S + 30, interval=1)
    assert time.monotonic() - stopped_at >= STAGE_DOWN_FOR_S  # its `for:` held it pending first
    targets = prometheus.targets()
    assert targets["sluice-processor"].startswith("down: ") and targets | {"sluice-processor": "down"} == {
        "sluice-edge": "up", "sluice-processor": "down", "sluice-integrations": "up"}, targets
    # Every alert is about the processor: its own target down, and the edge's readiness naming it.
    assert all(a.get("job") == "sluice-processor" or a.get("component") == "processor"
               for a in prometheus.alerts()), prometheus.alerts()
    assert children(up.state_dir)["processor"]["pid"] == processor, "the supervisor restarted the processor"
    assert alerts[0]["instance"] == generated["scrape_configs"][1]["static_configs"][0]["targets"][0]
