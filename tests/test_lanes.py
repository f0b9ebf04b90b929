"""The two lanes: a test that needs no service is `unit`, one that needs the broker, the
registry or chDB is `e2e` (tests/lanes.py derives it), and the unit lane starts none."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


# Collects in a child and prints each test's lane markers, as JSON on one line.
_LANES_OF = """
import json, sys, pytest
class Lanes:
    def pytest_collection_finish(self, session):
        print("LANES " + json.dumps({item.nodeid.split("[")[0]: sorted({m.name for m in item.iter_markers()} & {"unit", "e2e"})
                                     for item in session.items}))
sys.exit(pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *sys.argv[1:]], plugins=[Lanes()]))
"""


def _lanes(*files: str) -> dict[str, list[str]]:
    out = subprocess.run([sys.executable, "-c", _LANES_OF, *files], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    [line] = [line for line in out.stdout.splitlines() if line.startswith("LANES ")]
    return json.loads(line.removeprefix("LANES "))


def test_each_test_is_in_the_lane_of_what_it_needs():
    lanes = _lanes("tests/test_normalize.py", "tests/test_local_cluster.py", "tests/test_end_to_end.py",
                   "tests/test_health.py", "tests/test_warehouse_concurrency.py", "tests/test_supervision.py")
    assert all(len(names) == 1 for names in lanes.values()), lanes  # one lane each
    for test in ("test_normalize.py::test_every_column_of_every_reading",  # a pure rulebook
                 "test_local_cluster.py::test_one_broker_is_the_single_broker_as_before",  # built, never started
                 "test_health.py::test_readiness_names_the_unhealthy_component_and_a_dead_loop_is_fatal"):
        assert lanes[f"tests/{test}"] == ["unit"], test
    for test in ("test_end_to_end.py::test_seed_frames_come_back_from_latest_event_and_sql",  # the `stack` fixture
                 "test_health.py::test_a_lost_broker_fails_readiness_within_a_second",  # LocalKafka(...).start()
                 "test_warehouse_concurrency.py::test_engine_settings_reach_every_session",  # chDB in a child script
                 "test_supervision.py::test_sluice_up_exits_non_zero_when_a_child_crash_loops"):  # `sluice up`, by a helper
        assert lanes[f"tests/{test}"] == ["e2e"], test


@pytest.mark.e2e  # it runs the whole unit lane: a minute, so it belongs with the slow tests
def test_the_unit_lane_passes_and_starts_no_broker_registry_or_chdb(tmp_path):
    record = tmp_path / "services.json"
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "pytest", "-m", "unit", "-q", "-p", "no:cacheprovider",
                          "-p", "tests.service_probe"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "SLUICE_SERVICE_PROBE": str(record)})
    took = time.monotonic() - started
    assert out.returncode == 0, out.stdout[-5000:]
    started_services = json.loads(record.read_text())
    assert started_services == [], ("these tests of the unit lane started a service: teach tests/lanes.py "
                                    f"what starts it, or mark them e2e: {started_services}")
    print(f"the unit lane took {took:.1f} s")
