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


def service_metrics(state: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", SERVICE, str(port), state], cwd=ROOT)
    url = f"http://127.0.0.1:{port}/metrics"
    eventually(lambda: "refused" not in healthcheck(url).stderr, timeout=30)
    return process, url


def test_a_service_with_a_loop_down_is_unhealthy_and_healthy_once_it_recovers():
    for state, code in (("failing", 1), ("ok", 0)):
        process, url = service_metrics(state)
        try:
            result = healthcheck(url)
            assert result.returncode == code, result.stderr
            assert ("loops down: consumer" in result.stderr) == (state == "failing")
        finally:
            process.terminate()
            process.wait(10)
