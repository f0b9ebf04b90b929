"""Session fixtures: a real Kafka broker, a schema registry, and the whole Sluice stack on it.

Each session gets its own topic prefix, ClickHouse database and state folder,
so runs never collide (on a shared cluster or server too).
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from config import Settings
from tests.clickhouse_fixture import clickhouse_url_for_tests
from tests.kafka_fixture import free_port, kafka_bootstrap_for_tests
from tests.lanes import lane
from tests.registry_fixture import schema_registry  # noqa: F401  (a session fixture, registered by import)
from tests.seed import register_battery, register_battery_type


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by the markers
def pytest_collection_modifyitems(items) -> None:
    """Put each test in its lane (tests/lanes.py): `unit` needs no service, `e2e` does."""
    for item in items:
        name, _ = lane(item)
        item.add_marker(getattr(pytest.mark, name))


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory) -> Iterator[str]:
    bootstrap, stop = kafka_bootstrap_for_tests(tmp_path_factory.mktemp("kafka"))
    try:
        yield bootstrap
    finally:
        stop()


@pytest.fixture(scope="session")
def clickhouse_url() -> Iterator[str]:
    """A ClickHouse server URL, or '' for the embedded chDB engine."""
    url, stop = clickhouse_url_for_tests()
    try:
        yield url
    finally:
        stop()


def session_settings(kafka_bootstrap: str, state_dir: Path, **overrides) -> Settings:
    token = secrets.token_hex(4)
    base = Settings.from_env(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"test{token}.",
        state_dir=state_dir,
        database=f"sluice_test_{token}",
        http_port=free_port(),
        clickhouse_port=free_port(),
        processor_metrics_port=free_port(),
        sink_metrics_port=free_port(),
        integrations_metrics_port=free_port(),
        admin_key="",
        sink_batch_ms=200,
        # Off: tests that pause a stage or send bursts on purpose would meet 503s on a busy machine.
        # tests/test_shedding.py turns it on.
        admit_backlog_s=0.0,
    )
    return dataclasses.replace(base, **overrides)


@pytest.fixture(scope="session")
def stack(kafka_bootstrap, clickhouse_url, tmp_path_factory):
    """The whole stack (edge, processor, sink) as `sluice up` runs it, on the session's broker."""
    from sluice.stack import Stack

    running = Stack(session_settings(kafka_bootstrap, tmp_path_factory.mktemp("stack"),
                                     clickhouse_url=clickhouse_url))
    running.start()
    try:
        yield running
    finally:
        running.stop()


@contextlib.contextmanager
def stack_with_battery(settings: Settings) -> Iterator[tuple]:
    """A stack of its own on `settings`, started; an admin client of it; a Battery A1 registered
    in it (seed 001 steps 1–3). Yields (stack, client, thing id); stops the stack after."""
    from sluice.stack import Stack

    stack = Stack(settings)
    stack.start()
    try:
        with httpx.Client(base_url=stack.url, headers={"X-Api-Key": stack.settings.admin_key}, timeout=30) as api:
            yield stack, api, register_battery(api, *register_battery_type(api))
    finally:
        stack.stop()


@pytest.fixture()
def api(stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": stack.settings.admin_key},
                      timeout=30) as client:
        yield client
    stack.check_alive()  # a test passes only if no service crashed under it


@pytest.fixture(scope="session")
def battery_type(stack) -> tuple[str, str]:
    """(site id, Battery type id): seed 001 steps 1–2, once per session."""
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": stack.settings.admin_key}, timeout=30) as api:
        return register_battery_type(api)


@pytest.fixture()
def battery(stack, battery_type) -> str:
    """A fresh Battery A1 (seed 001 step 3) for each test, so tests never share readings."""
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": stack.settings.admin_key}, timeout=30) as api:
        return register_battery(api, *battery_type)


def eventually(check: Callable[[], object], timeout: float = 30, interval: float = 0.2):
    """Poll `check` until it returns something truthy; fail with its last value after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout}s; last value: {last!r}")
