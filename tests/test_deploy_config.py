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
