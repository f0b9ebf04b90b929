"""A Prometheus config for the local stack: `sluice monitoring prometheus-config`, and
`<state>/run/prometheus.yml`, written by `sluice up` once it is ready.

deploy/prometheus.yml finds compose's services by DNS; a `sluice up` stack has no DNS
names, only loopback ports, which this config names from the stack's settings (a
client's: what the running stack recorded). The job names are compose's, so
deploy/alerts.yml serves both shapes. With the embedded warehouse the sinks run inside
the edge: there is no sink job, and the edge's target carries `sinks="embedded"`,
which tells the sink's absent() rule that no sink is missing. Edge workers share the
edge's port: one target.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import yaml

from config import Settings
from sluice.endpoints import scrape_host

DEFAULT_INTERVAL = "15s"
DURATION = re.compile(r"^([0-9]+(ms|s|m|h))+$")  # Prometheus's duration, e.g. 15s, 1m30s

#: The alert rules of a source checkout (an installed package has no deploy/ folder).
CHECKOUT_RULES = Path(__file__).resolve().parent.parent / "deploy" / "alerts.yml"


def scrape_jobs(settings: Settings) -> list[dict]:
    """The scrape configs of the stack's services: edge, processor and integrations stage (unless
    they export nothing), and a standalone sink only with a ClickHouse server."""
    host = scrape_host(settings)
    edge_target: dict = {"targets": [f"{host}:{settings.http_port}"]}
    if settings.embedded_warehouse:
        edge_target["labels"] = {"sinks": "embedded"}
    jobs = [{"job_name": "sluice-edge", "metrics_path": "/metrics", "static_configs": [edge_target]}]
    if settings.processor_metrics_port:
        jobs.append({"job_name": "sluice-processor",
                     "static_configs": [{"targets": [f"{host}:{settings.processor_metrics_port}"]}]})
    if settings.integrations_metrics_port:
        jobs.append({"job_name": "sluice-integrations",
                     "static_configs": [{"targets": [f"{host}:{settings.integrations_metrics_port}"]}]})
    if not settings.embedded_warehouse and settings.sink_metrics_port:
        jobs.append({"job_name": "sluice-sink",
                     "static_configs": [{"targets": [f"{host}:{settings.sink_metrics_port}"]}]})
    return jobs


def prometheus_config(settings: Settings, interval: str = DEFAULT_INTERVAL,
                      rule_files: Sequence[Path] = ()) -> str:
    """The config's text: `interval` is both the scrape and the evaluation interval (a Prometheus
    duration); `rule_files` are written as absolute paths."""
    if not DURATION.match(interval):
        raise ValueError(f"the interval must be a Prometheus duration such as 15s or 1m, not {interval!r}")
    shape = "embedded warehouse: the sinks run inside the edge" if settings.embedded_warehouse else (
        "ClickHouse server: the sinks run as their own service")
    rules = "" if rule_files else "# No rule files: give some with --rules (Sluice's are deploy/alerts.yml).\n"
    body = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(Path(p).absolute()) for p in rule_files],
        "scrape_configs": scrape_jobs(settings),
    }
    return (f"# Prometheus config for the Sluice stack of {settings.state_dir}\n"
            f"# (edge http://{scrape_host(settings)}:{settings.http_port}; {shape}).\n"
            f"# Written by `sluice monitoring prometheus-config`; ports change with the stack's settings.\n"
            f"{rules}" + yaml.safe_dump(body, sort_keys=False))


def default_rule_files() -> list[Path]:
    return [CHECKOUT_RULES] if CHECKOUT_RULES.exists() else []


def write_for_stack(settings: Settings) -> Path:
    """`<state>/run/prometheus.yml` for the stack running with `settings`, at the default interval."""
    path = settings.state_dir / "run" / "prometheus.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(prometheus_config(settings, rule_files=default_rule_files()))
    tmp.replace(path)
    return path
