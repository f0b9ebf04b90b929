"""Pick the ClickHouse engine for the test session (imported by tests/conftest.py).

Order of preference: ``CLICKHOUSE_URL`` from the environment (a server); a
throw-away server via testcontainers if a Docker engine answers; otherwise the
embedded chDB engine, which needs nothing (returned as an empty URL).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from tests.kafka_fixture import docker_available

DEFAULT_TEST_IMAGE = "clickhouse/clickhouse-server:25.8"


def clickhouse_url_for_tests() -> tuple[str, Callable[[], None]]:
    """(url, stop): url is '' for embedded chDB. Blocks while a container starts."""
    url = os.environ.get("CLICKHOUSE_URL", "").strip()
    if url or not docker_available():
        return url, lambda: None
    from testcontainers.community.clickhouse import ClickHouseContainer

    container = ClickHouseContainer(os.environ.get("SLUICE_CLICKHOUSE_TEST_IMAGE", DEFAULT_TEST_IMAGE),
                                    username="sluice", password="sluice")
    container.start()
    host, port = container.get_container_host_ip(), container.get_exposed_port(8123)
    return f"http://sluice:sluice@{host}:{port}", container.stop
