"""The examples of docs/producers.md, run as a user runs them: their frames land as readings.

Needs the processor side of the ingest topic (processors/ingest_topic.py); skipped without it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import eventually, session_settings
from tests.seed import register_battery, register_battery_type

pytest.importorskip("processors.ingest_topic", reason="the processor side of the ingest topic is not here yet")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def registry_stack(kafka_bootstrap, clickhouse_url, schema_registry, tmp_path_factory):
    """A stack whose processor knows the session's schema registry, as `sluice up --with-registry` runs it."""
    from sluice.stack import Stack

    running = Stack(session_settings(kafka_bootstrap, tmp_path_factory.mktemp("stack"),
                                     clickhouse_url=clickhouse_url, schema_registry_url=schema_registry))
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def producer_setup(registry_stack) -> tuple[str, str]:
    """(a thing id, a write-only key of its org): what the walkthrough creates."""
    with httpx.Client(base_url=registry_stack.url, headers={"X-Api-Key": registry_stack.settings.admin_key},
                      timeout=30) as api:
        thing = register_battery(api, *register_battery_type(api))
        reply = api.post("/v2/api-keys", json={"name": "gateway", "scopes": ["write"]})
        assert reply.status_code == 201, reply.text
        return thing, reply.json()["key"]


@pytest.mark.parametrize("example", ["produce_json.py", "produce_avro.py"])
def test_an_example_producer_lands_its_frames_as_readings(example, registry_stack, producer_setup):
    thing, key = producer_setup
    settings = registry_stack.settings
    args = ["--bootstrap", settings.kafka_bootstrap, "--topic", f"{settings.topic_prefix}ingest",
            "--thing", thing, "--frames", "10"]
    if example == "produce_avro.py":
        args += ["--registry", settings.schema_registry_url]
    try:
        run = subprocess.run([sys.executable, str(EXAMPLES / example), *args],
                             env={**os.environ, "SLUICE_API_KEY": key}, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as exc:  # say where it hung: the registry, the broker, or the flush
        pytest.fail(f"{example} did not finish in 120 s; it printed:\n{exc.stdout or ''}{exc.stderr or ''}")
    assert run.returncode == 0, run.stdout + run.stderr
    request_id = re.search(r"requestId (kafka-\d+-\d+)", run.stdout).group(1)

    def verdict():
        reply = httpx.get(f"{registry_stack.url}/v2/ingest-log/{request_id}", headers={"X-Api-Key": key})
        return reply.json() if reply.status_code == 200 else None

    found = eventually(verdict, timeout=90, interval=0.5)  # generous: a loaded 2-core machine is slow
    assert (found["status"], found["framesIngested"]) == ("ingested", 10), found
