"""A Confluent-compatible schema registry for the test session (registered in tests/conftest.py).

``SLUICE_TEST_SCHEMA_REGISTRY_URL`` (a Confluent-API base URL) is used when set;
otherwise a LocalRegistry (Apicurio, no Docker) starts under the session's tmp
folder on a free loopback port and stops at the end of the session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from sluice.local_registry import LocalRegistry
from tests.kafka_fixture import free_port


_started: list[LocalRegistry] = []


def registry_log_tail(lines: int = 40) -> str:
    """The end of the session registry's log, for a failure's message ("" for an external one)."""
    if not _started:
        return ""
    try:
        return "\n".join(_started[0].stdout_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return repr(exc)


@pytest.fixture(scope="session")
def schema_registry(tmp_path_factory) -> Iterator[str]:
    """The registry's Confluent-API base URL, e.g. ``http://127.0.0.1:PORT/apis/ccompat/v7``.

    Blocks on first use: ~10 s for the JVM, plus a one-off download of the app.
    """
    external = os.environ.get("SLUICE_TEST_SCHEMA_REGISTRY_URL")
    if external:
        yield external.rstrip("/")
        return
    registry = LocalRegistry(tmp_path_factory.mktemp("registry"), port=free_port())
    _started.append(registry)
    registry.start()
    try:
        yield registry.url
    finally:
        registry.stop()
