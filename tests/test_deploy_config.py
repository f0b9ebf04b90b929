"""The shipped Prometheus config and alert rules are what Prometheus itself accepts
(promtool, from Debian's `prometheus` package; `.ci/run` installs it where it can)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus); the deploy files are unchecked")


@needs_promtool
@pytest.mark.parametrize("command, path", [("check config", "prometheus.yml"), ("check rules", "alerts.yml"),
                                           ("test rules", "alerts.test.yml")])
def test_promtool_accepts_the_shipped_files(command, path):
    # `test rules`: the rules fire on made-up series (a stage down, lag growing, insert errors).
    result = subprocess.run([PROMTOOL, *command.split(), str(DEPLOY / path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_and_rules_name_only_documented_metrics():
    """Every sluice_ metric the Grafana dashboard and the alert rules query is in the README's table."""
    import json
    import re

    readme = (DEPLOY.parent / "README.md").read_text()
    documented = set(re.findall(r"`(sluice_[a-z_]+)`", readme))
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    queries = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])
    queries += (DEPLOY / "alerts.yml").read_text()
    used = {re.sub(r"_(bucket|sum|count)$", "", name) for name in re.findall(r"\bsluice_[a-z_]+", queries)}
    assert used and used <= documented, used - documented


# The config `sluice monitoring prometheus-config` prints for a local stack, in both warehouse shapes.

def local_settings(**overrides):
    from config import Settings

    return Settings.from_env(**{"http_host": "127.0.0.1", "http_port": 18080, "processor_metrics_port": 19464,
                                "sink_metrics_port": 19465, "integrations_metrics_port": 19466, **overrides})


def targets(config: dict) -> dict[str, list[dict]]:
    return {job["job_name"]: job["static_configs"] for job in config["scrape_configs"]}


def test_the_local_config_has_no_sink_job_when_the_sinks_run_inside_the_edge():
    import yaml

    from sluice.prometheus_config import prometheus_config

    config = yaml.safe_load(prometheus_config(local_settings(clickhouse_url=""), "2s", [DEPLOY / "alerts.yml"]))
    assert targets(config) == {
        "sluice-edge": [{"targets": ["127.0.0.1:18080"], "labels": {"sinks": "embedded"}}],
        "sluice-processor": [{"targets": ["127.0.0.1:19464"]}],
        "sluice-integrations": [{"targets": ["127.0.0.1:19466"]}],
    }
    assert config["global"] == {"scrape_interval": "2s", "evaluation_interval": "2s"}
    assert config["rule_files"] == [str(DEPLOY / "alerts.yml")]


def test_the_local_config_scrapes_a_standalone_sink_with_a_clickhouse_server():
    import yaml

    from sluice.prometheus_config import prometheus_config

    settings = local_settings(clickhouse_url="http://u:secret@127.0.0.1:8123", http_host="0.0.0.0")
    text = prometheus_config(settings)
    assert "secret" not in text
    assert targets(yaml.safe_load(text)) == {
        "sluice-edge": [{"targets": ["127.0.0.1:18080"]}],  # listening everywhere: scraped on loopback
        "sluice-processor": [{"targets": ["127.0.0.1:19464"]}],
        "sluice-integrations": [{"targets": ["127.0.0.1:19466"]}],
        "sluice-sink": [{"targets": ["127.0.0.1:19465"]}],
    }
    assert "sluice-processor" not in targets(yaml.safe_load(prometheus_config(
        local_settings(processor_metrics_port=0)))), "a processor exporting nothing is no target"
    with pytest.raises(ValueError, match="Prometheus duration"):
        prometheus_config(settings, "15")


@needs_promtool
@pytest.mark.parametrize("clickhouse_url", ["", "http://127.0.0.1:8123"], ids=["embedded", "server"])
def test_promtool_accepts_the_local_config(tmp_path, clickhouse_url):
    from sluice.prometheus_config import prometheus_config

    path = tmp_path / "prometheus.yml"
    path.write_text(prometheus_config(local_settings(clickhouse_url=clickhouse_url), "1s", [DEPLOY / "alerts.yml"]))
    result = subprocess.run([PROMTOOL, "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_command_prints_the_ports_the_running_stack_recorded(tmp_path):
    """In a shell with none of the stack's variables, the command finds the ports in the state
    folder (this test process stands for the running `sluice up`)."""
    import os
    import sys

    import yaml

    from sluice import endpoints

    state = tmp_path / "state"
    endpoints.record(local_settings(state_dir=state, http_port=28080, processor_metrics_port=29464), None)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SLUICE_") and k not in ("KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_URL")}
    result = subprocess.run([sys.executable, "-m", "sluice.cli", "monitoring", "prometheus-config",
                             "--interval", "5s"], env={**env, "SLUICE_STATE_DIR": str(state)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert targets(config)["sluice-edge"][0]["targets"] == ["127.0.0.1:28080"]
    assert targets(config)["sluice-processor"][0]["targets"] == ["127.0.0.1:29464"]
    assert config["rule_files"] == [str(DEPLOY / "alerts.yml")]  # a checkout's rules by default
    assert result.stderr == ""
