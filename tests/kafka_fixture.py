"""Pick a Kafka broker for the test session (imported by tests/conftest.py).

Order of preference:
1. ``KAFKA_BOOTSTRAP_SERVERS`` from the environment (CI service, your own broker);
2. a throw-away container via testcontainers, if a Docker engine answers;
3. a real broker started from jars by :class:`sluice.local_kafka.LocalKafka`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from sluice.local_kafka import LocalKafka

# testcontainers' KafkaContainer only drives Confluent images (it edits
# /etc/confluent/docker/* and rejects tags below 7.0.0 in KRaft mode), so the
# apache/kafka image cannot be used with it. cp-kafka 7.9 = Apache Kafka 3.9,
# the newest line it is known to work with; override with SLUICE_KAFKA_TEST_IMAGE.
DEFAULT_TEST_IMAGE = "confluentinc/cp-kafka:7.9.0"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct free ports (sockets held open together so the
    kernel cannot hand out the same port twice)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def free_http_and_kafka_ports() -> tuple[int, int]:
    """(an HTTP port, a Kafka port whose next port is free too): the local broker's controller
    listens on the Kafka port + 1, which a plain pick of free ports does not reserve."""
    while True:
        http, kafka = free_ports(2)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", kafka + 1))
            except OSError:
                continue
        if kafka + 1 != http:
            return http, kafka


def docker_available(timeout: float = 5.0) -> bool:
    """True if `docker info` succeeds within ``timeout`` seconds (blocks that long at most)."""
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(
            ["docker", "info"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
        )
    except (subprocess.TimeoutExpired, OSError):
        return False
    return result.returncode == 0


def _start_container() -> tuple[str, Callable[[], None]]:
    from testcontainers.community.kafka import KafkaContainer

    image = os.environ.get("SLUICE_KAFKA_TEST_IMAGE", DEFAULT_TEST_IMAGE)
    container = KafkaContainer(image).with_kraft()
    container.start()
    return container.get_bootstrap_server(), container.stop


def _start_local(tmp_root: Path) -> tuple[str, Callable[[], None]]:
    port, controller_port = free_ports(2)
    kafka = LocalKafka(Path(tmp_root) / "local-kafka", port=port, controller_port=controller_port)
    kafka.start()
    return kafka.bootstrap, kafka.stop


def kafka_bootstrap_for_tests(tmp_root: Path) -> tuple[str, Callable[[], None]]:
    """Return ``(bootstrap_servers, stop)`` for a broker the tests may use.

    Blocks until the broker is ready: up to ~5 s for the Docker probe, then a
    container start or a LocalKafka start (~10 s, plus a one-off jar download).
    ``stop`` is idempotent-enough to call once at session end; it is a no-op
    for an externally provided broker. Raises whatever the chosen backend
    raises (e.g. LocalKafkaError when neither Docker nor java/mvn is usable).
    """
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        return external, lambda: None
    if docker_available():
        return _start_container()
    return _start_local(tmp_root)


def free_port_run(count: int) -> int:
    """The first of `count` consecutive ports on 127.0.0.1 that were all free a moment ago (a local
    cluster's nodes take a client and a controller port each, one after another)."""
    while True:
        first = free_port()
        if first + count > 65536:
            continue
        with ExitStack() as stack:
            try:
                for port in range(first, first + count):
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except OSError:
                continue
        return first
