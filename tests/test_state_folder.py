"""One stack per state folder, and the CLI finds it, with real `sluice up` processes on free ports.

`sluice up` locks its state folder: a second one (other ports, or started at the same moment)
refuses at once naming the first, and touches nothing. It records its endpoints there, so
commands in another shell, with none of the stack's variables, talk to that stack; a variable
that is set still wins; a SIGKILLed stack leaves no lock, and its endpoints are named as stale.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import eventually
from tests.kafka_fixture import free_http_and_kafka_ports, free_port
from tests.test_sluice_up import Up, processes_of

START_S = 150  # a `sluice up` start is 20-40 s here; more on a busy machine


def stack_ports(taken: set[int]) -> tuple[int, int, int]:
    """(HTTP, Kafka, processor metrics) ports, free and none of them (nor the controller's, the
    Kafka port + 1) in `taken`, which they join."""
    while True:
        http, kafka = free_http_and_kafka_ports()
        metrics = free_port()
        wanted = {http, kafka, kafka + 1, metrics}
        if len(wanted) == 4 and not wanted & taken:
            taken |= wanted
            return http, kafka, metrics


def start_up(state: Path, ports: tuple[int, int, int], label: str) -> Up:
    http, kafka, metrics = ports
    return Up(state, http, kafka, label=label, SLUICE_PROCESSOR_METRICS_PORT=str(metrics))


def sluice(*args: str, cwd: Path, timeout: float = 90, **env: str) -> subprocess.CompletedProcess:
    """A CLI command in a shell that has none of the stack's variables (only `env`)."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("SLUICE_") and k not in ("KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_URL")}
    clean["COLUMNS"] = "250"  # rich wraps a table to the terminal; keep URLs on one line
    return subprocess.run([sys.executable, "-m", "sluice.cli", *args], cwd=cwd, env={**clean, **env},
                          capture_output=True, text=True, timeout=timeout)


class Owned:
    """The stack that won the state folder, the one refused, and the ports in use."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.taken: set[int] = set()
        self.up: Up | None = None
        self.refused: Up | None = None
        self.refused_after_s = 0.0
        self.ports: tuple[int, int, int] = (0, 0, 0)


@pytest.fixture(scope="module")
def owned(tmp_path_factory):
    # Named as the default is, so a command run from its parent finds it without SLUICE_STATE_DIR.
    owned = Owned(tmp_path_factory.mktemp("owned") / ".sluice")
    ports = [stack_ports(owned.taken), stack_ports(owned.taken)]
    started = time.monotonic()
    ups = [start_up(owned.state, ports[0], "first"), start_up(owned.state, ports[1], "second")]
    try:
        refused = eventually(lambda: next((u for u in ups if u.process.poll() is not None), None), timeout=60)
        owned.refused_after_s = time.monotonic() - started
        owned.refused = refused
        owned.up = next(u for u in ups if u is not refused)
        owned.ports = ports[ups.index(owned.up)]
        eventually(lambda: owned.up.ready() and (owned.state / "run" / "endpoints.json").exists(),
                   timeout=START_S, interval=0.5)  # recorded once every part is ready, not only the edge
        yield owned
    finally:
        for up in ups:
            if up.process.poll() is None:
                up.stop(signal.SIGTERM)


def test_of_two_started_at_once_one_runs_and_the_other_refuses_naming_it(owned):
    assert owned.refused.process.returncode == 1, owned.refused.output()
    assert owned.refused_after_s < 30
    said = owned.refused.output()
    assert f"in use by sluice up (pid {owned.up.process.pid})" in said, said
    assert owned.up.process.poll() is None and owned.up.ready()
    lock = (owned.state / "lock").read_text().splitlines()
    assert lock == [str(owned.up.process.pid), "sluice up"]


def snapshot(state: Path) -> dict[str, object]:
    """What a second `sluice up` must not touch: the live broker's config, log dir and
    identity, the endpoints, the lock, the admin key."""
    files = ("kafka/server.properties", "kafka/data/meta.properties", "run/endpoints.json", "lock", "admin-key")
    taken = {name: ((state / name).read_bytes(), (state / name).stat().st_mtime_ns) for name in files}
    taken["kafka/data/"] = sorted(p.name for p in (state / "kafka" / "data").iterdir())
    taken["/"] = sorted(p.name for p in state.iterdir())
    return taken


def test_a_second_up_on_a_live_folder_refuses_at_once_and_touches_nothing(owned):
    before = snapshot(owned.state)
    started = time.monotonic()
    second = start_up(owned.state, stack_ports(owned.taken), "third")
    try:
        code = second.process.wait(30)
    finally:
        if second.process.poll() is None:
            second.stop(signal.SIGKILL)
    assert code == 1 and time.monotonic() - started < 30
    said = second.output()
    assert f"is in use by sluice up (pid {owned.up.process.pid})" in said, said
    assert "starting the local stack" not in said  # refused before anything else
    assert snapshot(owned.state) == before
    assert owned.up.ready()  # the first stack still serves
    assert httpx.get(f"{owned.up.url}/readyz", timeout=5).json()["ready"]


def dead_letter(url: str, key: str) -> str:
    """A request for a thing without a type: dead-lettered (TYPE_NOT_INITIALIZED); its request id."""
    with httpx.Client(base_url=url, headers={"X-Api-Key": key}, timeout=30) as api:
        site = api.post("/v2/sites", json={"name": "endpoints"}).json()["id"]
        thing = api.post(f"/v2/sites/{site}/things", json={"thingName": "untyped"}).json()["id"]
        reply = api.post(f"/v2/thing/{thing}/data", json={"frames": [{"timestamp": 1718884800000,
                                                                       "metrics": {"x": 1.0}}]})
        assert reply.status_code == 202, reply.text
        request_id = reply.json()["requestId"]
        eventually(lambda: api.get(f"/v2/ingest-log/{request_id}").status_code == 200, timeout=60)
    return request_id


def test_commands_in_another_shell_find_the_stack_in_its_state_folder(owned, tmp_path):
    http, kafka, metrics = owned.ports
    recorded = json.loads((owned.state / "run" / "endpoints.json").read_text())
    assert recorded["pid"] == owned.up.process.pid
    assert recorded["settings"]["KAFKA_BOOTSTRAP_SERVERS"] == f"127.0.0.1:{kafka}"
    assert recorded["admin_key_file"] == str(owned.state / "admin-key")
    request_id = dead_letter(owned.up.url, (owned.state / "admin-key").read_text().strip())

    # From elsewhere, the folder named by SLUICE_STATE_DIR.
    replay = sluice("replay", "--dry-run", "--request-id", request_id, cwd=tmp_path,
                    SLUICE_STATE_DIR=str(owned.state))
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout.splitlines() == [f"sluice replay: Kafka 127.0.0.1:{kafka}, topic prefix 'sluice.'",
                                          "1 dead letters matched; dry run, nothing replayed"]

    # From the folder's parent, where the default ./.sluice is this stack's.
    status = sluice("status", "--once", "--interval", "0.5", cwd=owned.state.parent)
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"scraping edge http://127.0.0.1:{http}, processor http://127.0.0.1:{metrics}/metrics" in status.stdout
    assert re.search(r"edge\s*│\s*ready", status.stdout) and re.search(r"processor\s*│\s*up", status.stdout), \
        status.stdout

    query = f"SELECT count() AS n FROM sluice.rejects WHERE request_id = '{request_id}'"
    eventually(lambda: sluice("sql", query, "--format", "csv", cwd=owned.state.parent).stdout.split() == ['"n"', "1"],
               timeout=60, interval=1)


def test_a_variable_set_in_the_shell_wins_over_the_recorded_endpoint(owned, tmp_path):
    _, _, metrics = owned.ports
    elsewhere = free_port()
    status = sluice("status", "--once", "--interval", "0.2", cwd=tmp_path, SLUICE_STATE_DIR=str(owned.state),
                    SLUICE_HTTP_PORT=str(elsewhere))
    # The edge is looked for where the shell says (nothing there), the processor where the stack recorded it.
    assert status.returncode == 1
    assert f"scraping edge http://127.0.0.1:{elsewhere}, processor http://127.0.0.1:{metrics}/metrics" \
        in status.stdout, status.stdout


def test_a_sigkilled_up_leaves_no_lock_and_its_endpoints_are_named_stale(owned, tmp_path):
    killed = owned.up.process.pid
    owned.up.process.kill()
    owned.up.process.wait(30)
    eventually(lambda: processes_of(owned.state) == [], timeout=60, interval=0.5)  # its children follow it
    assert (owned.state / "run" / "endpoints.json").exists()  # no clean stop

    status = sluice("status", "--once", "--interval", "0.2", cwd=tmp_path, SLUICE_STATE_DIR=str(owned.state),
                    SLUICE_HTTP_PORT=str(free_port()))
    assert f"the `sluice up` that wrote it (pid {killed}) is gone" in status.stderr, status.stderr
    assert "processor http://127.0.0.1:9464/metrics" in status.stdout  # the defaults, not the dead stack's

    again = start_up(owned.state, stack_ports(owned.taken), "again")
    try:
        recorded = owned.state / "run" / "endpoints.json"
        eventually(lambda: again.ready() and recorded.exists(), timeout=START_S, interval=0.5)
        assert json.loads(recorded.read_text())["pid"] == again.process.pid
    finally:
        assert again.stop(signal.SIGTERM) == 0, again.output()
    assert not (owned.state / "run" / "endpoints.json").exists()  # a clean stop removes them
    assert (owned.state / "lock").read_text() == ""
