"""The state folder's lock and recorded endpoints on their own, without a stack: a held folder
is refused naming its holder, the lock dies with its process, the standalone broker and
registry take it too, and recorded endpoints stand beneath the environment only while
the process that wrote them runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from config import Settings
from sluice import endpoints
from sluice.state_lock import StateLock, StateLocked
from tests.kafka_fixture import free_port

HOLD = ("from sluice.state_lock import StateLock; import sys, time; "
        "held = StateLock(sys.argv[1], 'holder').acquire(); print('held', flush=True); time.sleep(600)")


def test_a_held_folder_is_refused_naming_its_holder_until_released(tmp_path):
    first = StateLock(tmp_path, "sluice up").acquire()
    with pytest.raises(StateLocked) as refused:
        StateLock(tmp_path, "sluice up").acquire()
    assert f"is in use by sluice up (pid {os.getpid()})" in str(refused.value)
    first.release()
    assert (tmp_path / "lock").read_text() == ""
    with StateLock(tmp_path, "python -m sluice.local_kafka"):
        assert (tmp_path / "lock").read_text() == f"{os.getpid()}\npython -m sluice.local_kafka\n"


def test_the_lock_dies_with_a_killed_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(StateLocked, match=f"in use by holder \\(pid {holder.pid}\\)"):
            StateLock(tmp_path, "sluice up").acquire()
    finally:
        holder.kill()
        holder.wait(10)
    with StateLock(tmp_path, "sluice up"):  # no stale lock, though the file still names the dead holder
        pass


@pytest.mark.parametrize("module", ["sluice.local_kafka", "sluice.local_registry"])
def test_the_standalone_broker_and_registry_refuse_a_held_folder_and_touch_nothing(tmp_path, module):
    with StateLock(tmp_path, "sluice up"):
        ran = subprocess.run([sys.executable, "-m", module, "--state-dir", str(tmp_path), "--port", str(free_port())],
                             capture_output=True, text=True, timeout=60)
    assert ran.returncode == 1
    assert f"is in use by sluice up (pid {os.getpid()})" in ran.stderr, ran.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lock"]


def test_sql_does_not_open_embedded_chdb_in_a_folder_a_stack_owns(tmp_path):
    """A stack that is starting (its edge not answering yet) owns the warehouse: `sluice sql`
    is refused rather than opening chDB beneath it."""
    env = {**os.environ, "SLUICE_STATE_DIR": str(tmp_path), "SLUICE_HTTP_PORT": str(free_port())}
    env.pop("CLICKHOUSE_URL", None)
    with StateLock(tmp_path, "sluice up"):
        ran = subprocess.run([sys.executable, "-m", "sluice.cli", "sql", "SELECT 1"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert ran.returncode == 1
    assert f"sluice up (pid {os.getpid()}) owns the warehouse in {tmp_path}" in ran.stderr, ran.stderr
    assert not (tmp_path / "chdb").exists()


def stack_settings(state_dir: Path) -> Settings:
    return Settings.from_env(state_dir=state_dir, kafka_bootstrap="127.0.0.1:19092", http_port=18080,
                             processor_metrics_port=19464, topic_prefix="", admin_key="secret-key",
                             clickhouse_url="http://reader:hunter2@127.0.0.1:8123")


@pytest.fixture()
def client_env(monkeypatch, tmp_path):
    """A shell with none of the stack's variables, on the state folder `tmp_path`."""
    for name in [n for n in os.environ if n.startswith("SLUICE_") or n in ("KAFKA_BOOTSTRAP_SERVERS",
                                                                           "CLICKHOUSE_URL")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SLUICE_STATE_DIR", str(tmp_path))
    return monkeypatch


def test_recorded_endpoints_stand_beneath_the_environment_and_hold_no_secret(client_env, tmp_path):
    path = endpoints.record(stack_settings(tmp_path), admin_key_file=tmp_path / "admin-key")
    text = path.read_text()
    assert "secret-key" not in text and "hunter2" not in text
    assert json.loads(text)["admin_key_file"] == str(tmp_path / "admin-key")

    found = endpoints.client_settings(warn=pytest.fail)
    assert (found.kafka_bootstrap, found.http_port, found.processor_metrics_port, found.topic_prefix) == (
        "127.0.0.1:19092", 18080, 19464, "")
    assert found.clickhouse_url == "http://reader@127.0.0.1:8123" and found.admin_key == ""

    client_env.setenv("SLUICE_HTTP_PORT", "28080")
    client_env.setenv("SLUICE_TOPIC_PREFIX", "other.")
    client_env.setenv("KAFKA_BOOTSTRAP_SERVERS", "")  # empty means unset: the recorded one stays
    found = endpoints.client_settings(warn=pytest.fail)
    assert (found.http_port, found.topic_prefix, found.kafka_bootstrap, found.processor_metrics_port) == (
        28080, "other.", "127.0.0.1:19092", 19464)


def test_endpoints_whose_writer_is_gone_are_named_and_ignored(client_env, tmp_path):
    path = endpoints.record(stack_settings(tmp_path), admin_key_file=None)
    body = json.loads(path.read_text())
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # A dead pid, then a live pid that is another process than the writer (a pid reused).
        for pid, started in ((gone.pid, body["pid_started"]), (other.pid, body["pid_started"])):
            path.write_text(json.dumps({**body, "pid": pid, "pid_started": started}))
            said: list[str] = []
            found = endpoints.client_settings(warn=said.append)
            assert said == [f"sluice: ignoring {path}: the `sluice up` that wrote it (pid {pid}) is gone; "
                            "using the environment and defaults"]
            assert found == Settings.from_env()
    finally:
        other.kill()
        other.wait()
    path.write_text("{not json")
    said = []
    assert endpoints.client_settings(warn=said.append) == Settings.from_env()
    assert said and "cannot be read" in said[0]
