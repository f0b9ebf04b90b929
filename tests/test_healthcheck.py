"""`python -m sluice.healthcheck URL`, the containers' health check, as compose runs it:
healthy services pass, a service that does not answer or has a loop down fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import eventually
from tests.kafka_fixture import free_port

ROOT = Path(__file__).resolve().parent.parent


def healthcheck(url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sluice.healthcheck", url], capture_output=True, text=True,
                          timeout=30)


def test_a_running_edge_and_processor_are_healthy(stack):
    assert healthcheck(f"{stack.url}/readyz").returncode == 0
    processor = f"http://127.0.0.1:{stack.settings.processor_metrics_port}/metrics"
    result = healthcheck(processor)
    assert result.returncode == 0, result.stderr


def test_a_service_that_does_not_answer_is_unhealthy():
    result = healthcheck(f"http://127.0.0.1:{free_port()}/metrics")
    assert result.returncode == 1 and "refused" in result.stderr


# A service's /metrics (bus.metrics) with one loop in the given state, in a process of its own.
SERVICE = """
import sys, time
from bus import health, metrics
loop = health.health().component("consumer", stall_after=3600)
loop.ok() if sys.argv[2] == "ok" else loop.failing("broker unreachable")
metrics.serve(int(sys.argv[1]), "127.0.0.1")
time.sleep(120)
"""


# The edge app's own /readyz while its processor watch finds no processor (no broker: not started).
EDGE = """
import sys, uvicorn
from bus import health
from config import Settings
from producers.app import create_app
health.health().component("processor", stall_after=3600).failing("no member in group sluice.processors")
uvicorn.run(create_app(Settings(), "127.0.0.1:1", None), host="127.0.0.1", port=int(sys.argv[1]),
            lifespan="off", log_level="warning")
"""


def serving(script: str, path: str, *args: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", script, str(port), *args], cwd=ROOT)
    url = f"http://127.0.0.1:{port}{path}"
    eventually(lambda: "refused" not in healthcheck(url).stderr, timeout=60)
    return process, url


def test_a_service_with_a_loop_down_is_unhealthy_and_healthy_once_it_recovers():
    for state, code in (("failing", 1), ("ok", 0)):
        process, url = serving(SERVICE, "/metrics", state)
        try:
            result = healthcheck(url)
            assert result.returncode == code, result.stderr
            assert ("loops down: consumer" in result.stderr) == (state == "failing")
        finally:
            process.terminate()
            process.wait(10)


def test_an_edge_that_is_not_ready_is_unhealthy_and_says_why():
    process, url = serving(EDGE, "/readyz")
    try:
        result = healthcheck(url)
        assert result.returncode == 1
        assert "answered 503" in result.stderr and "processor (no member in group sluice.processors)" in result.stderr
    finally:
        process.terminate()
        process.wait(10)
