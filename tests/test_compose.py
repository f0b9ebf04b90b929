"""docker-compose.yml as docker-compose itself reads it (`docker-compose config`, Debian's
package; `.ci/run` installs it where it can), then what it means: every stateful service
keeps its data in a volume of its own, Kafka is one three-node KRaft cluster whose
topics survive a broker, the Sluice services run commands and read settings that
exist, scale, and say whether they are healthy with what their image has."""

from __future__ import annotations

import base64
import importlib.util
import os
import posixpath
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from config import Settings
from tests.cli_help import cli_commands

ROOT = Path(__file__).resolve().parent.parent
KAFKA_IMAGE = "apache/kafka"
KAFKA_IMAGE_LOG_DIRS = "/tmp/kraft-combined-logs"  # where the image writes unless KAFKA_LOG_DIRS says otherwise
# Where an image keeps its data when its service does not move it (Kafka's is KAFKA_LOG_DIRS, below).
DATA_PATHS = {"clickhouse/clickhouse-server": "/var/lib/clickhouse"}
# The port of each Sluice service's own health: the setting its health check must follow.
HEALTH_PORTS = {"edge": "http_port", "processor": "processor_metrics_port", "sink": "sink_metrics_port",
                "integrations": "integrations_metrics_port"}
SCALED = ("edge", "processor", "sink", "integrations")


def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    plugin = subprocess.run(["docker", "compose", "version"], capture_output=True) if shutil.which("docker") else None
    return ["docker", "compose"] if plugin and plugin.returncode == 0 else None


@pytest.fixture(scope="module")
def compose() -> dict:
    command = compose_command()
    if command is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose); docker-compose.yml is unchecked")
    env = {**os.environ, "SLUICE_ADMIN_KEY": "sk_compose_test"}
    result = subprocess.run([*command, "-f", str(ROOT / "docker-compose.yml"), "config"], capture_output=True,
                            text=True, timeout=120, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def sluice_services(compose: dict) -> dict[str, dict]:
    """The services built from this project's Dockerfile."""
    return {name: service for name, service in compose["services"].items() if "build" in service}


def kafka_nodes(compose: dict) -> dict[str, dict]:
    return {name: service for name, service in compose["services"].items()
            if service.get("image", "").split(":")[0] == KAFKA_IMAGE}


def named_mounts(service: dict) -> dict[str, str]:
    """volume name -> where the container mounts it (short syntax `name:/path[:mode]`, or the long one)."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        if source and not source.startswith(("/", ".")):
            mounts[source] = target
    return mounts


def inside(path: str, folder: str) -> bool:
    return posixpath.commonpath([posixpath.normpath(path), posixpath.normpath(folder)]) == posixpath.normpath(folder)


def one_shot(compose: dict, name: str) -> bool:
    """A job the others wait to finish (`sluice topics`), not a long-running service."""
    return any(dependency.get("condition") == "service_completed_successfully"
               for service in compose["services"].values()
               for dep, dependency in (service.get("depends_on") or {}).items() if dep == name)


def test_each_stateful_service_keeps_its_data_in_a_volume_of_its_own(compose):
    used: dict[str, str] = {}
    for name, service in compose["services"].items():
        mounts = named_mounts(service)
        for volume in mounts:
            assert volume not in used, f"{name} and {used[volume]} share the volume {volume}"
            used[volume] = name
        image = service.get("image", "").split(":")[0]
        if image == KAFKA_IMAGE:
            writes = service["environment"].get("KAFKA_LOG_DIRS", KAFKA_IMAGE_LOG_DIRS).split(",")
        elif image in DATA_PATHS:
            writes = [DATA_PATHS[image]]
        elif image == "prom/prometheus":
            writes = [flag.split("=", 1)[1] for flag in service["command"] if flag.startswith("--storage.tsdb.path=")]
        else:
            continue
        for path in writes:
            assert any(inside(path, target) for target in mounts.values()), \
                f"{name} writes to {path}, outside its volumes {mounts}"
    assert set(used) == set(compose.get("volumes") or {}), "a declared volume no service mounts"


def test_the_registry_keeps_its_schemas_in_the_kafka_cluster(compose):
    registry = compose["services"]["registry"]["environment"]
    assert registry["APICURIO_STORAGE_KIND"] == "kafkasql"  # no volume: its journal is a replicated topic
    nodes = {service["environment"]["KAFKA_ADVERTISED_LISTENERS"].split("//")[1]
             for service in kafka_nodes(compose).values()}
    assert set(registry["APICURIO_KAFKASQL_BOOTSTRAP_SERVERS"].split(",")) == nodes


def test_kafka_is_three_nodes_of_one_kraft_cluster_that_survives_a_broker(compose):
    nodes = kafka_nodes(compose)
    assert len(nodes) == 3
    envs = [service["environment"] for service in nodes.values()]
    for key in ("CLUSTER_ID", "KAFKA_CONTROLLER_QUORUM_VOTERS", "KAFKA_LISTENERS", "KAFKA_LOG_DIRS"):
        assert len({str(env[key]) for env in envs}) == 1, f"the nodes disagree on {key}"
    cluster_id = envs[0]["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16, "CLUSTER_ID is a base64 UUID (kafka-storage)"
    controller_port = re.search(r"CONTROLLER://[^:,]*:(\d+)", envs[0]["KAFKA_LISTENERS"]).group(1)
    voters = set(envs[0]["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","))
    assert voters == {f"{service['environment']['KAFKA_NODE_ID']}@{name}:{controller_port}"
                      for name, service in nodes.items()}, "each node votes, by its service name and id"
    for name, env in zip(nodes, envs):
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        replicated = {key: int(env[key]) for key in (
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
            "KAFKA_DEFAULT_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "KAFKA_MIN_INSYNC_REPLICAS")}
        assert replicated == {"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": 3,
                              "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": 3,
                              "KAFKA_DEFAULT_REPLICATION_FACTOR": 3,
                              "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": 2, "KAFKA_MIN_INSYNC_REPLICAS": 2}
        assert str(env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"]).lower() == "false"


def test_sluice_reaches_every_broker_and_replicates_its_topics_three_times(compose):
    brokers = {service["environment"]["KAFKA_ADVERTISED_LISTENERS"].split("//")[1]
               for service in kafka_nodes(compose).values()}
    for name, service in sluice_services(compose).items():
        env = service["environment"]
        assert set(env["KAFKA_BOOTSTRAP_SERVERS"].split(",")) == brokers, name
        assert (env["SLUICE_REPLICATION_FACTOR"], env["SLUICE_MIN_INSYNC_REPLICAS"]) == ("3", "2"), name


def test_sluice_services_read_only_declared_settings_and_run_commands_of_the_cli(compose):
    declared = {env for env, _, _ in Settings.describe()}
    commands = cli_commands([sys.executable, "-m", "sluice.cli"], cwd=ROOT)
    for name, service in sluice_services(compose).items():
        unknown = set(service.get("environment") or {}) - declared
        assert not unknown, f"{name} sets {unknown}, which no setting of config/settings.py reads"
        assert service["command"][0] == "sluice" and service["command"][1] in commands, \
            f"{name}: `{' '.join(service['command'])}` is not a command of the CLI"
    for name, service in compose["services"].items():
        if "build" not in service:
            stray = [key for key in service.get("environment") or {} if key.startswith("SLUICE_")]
            assert not stray, f"{name} is not a Sluice service but sets {stray}"


def test_every_service_has_a_health_check_and_sluice_checks_itself_with_python(compose, monkeypatch):
    for name, service in compose["services"].items():
        if one_shot(compose, name):
            continue
        test = (service.get("healthcheck") or {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL") and not service["healthcheck"].get("disable"), \
            f"{name} has no health check"
    for name, service in sluice_services(compose).items():
        if one_shot(compose, name):
            continue
        # The image is python:3.11-slim: no curl, no wget. The check is the package's own module.
        test = service["healthcheck"]["test"]
        assert test[:4] == ["CMD", "python", "-m", "sluice.healthcheck"], f"{name}: {test}"
        assert importlib.util.find_spec(test[3]) is not None
        for key, value in service["environment"].items():
            monkeypatch.setenv(key, str(value))
        port = getattr(Settings.from_env(), HEALTH_PORTS[service["command"][1]])
        assert urlsplit(test[4]).port == port, f"{name}'s health check asks port {urlsplit(test[4]).port}"


def test_the_stages_scale_without_clashing(compose):
    for name in SCALED:
        service = compose["services"][name]
        assert "container_name" not in service, f"{name} cannot scale with a fixed container name"
        for port in service.get("ports", []):
            published = str(port["published"] if isinstance(port, dict) else port.split(":")[-2])
            assert "-" in published, f"{name} publishes host port {published}: a second replica could not"
