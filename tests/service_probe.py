"""A pytest plugin that records every service a run starts, for tests/test_lanes.py.

Loaded with `-p tests.service_probe`; the record goes to the JSON file named by
SLUICE_SERVICE_PROBE: one entry per service, with the test that was running. It sees a
chDB engine opened in the run's process (chDB's one connection class, wrapped to note
the call and go on) and, by watching the process tree every 50 ms, any JVM (a broker, a
registry) or chDB started by a child or grandchild: a JVM takes longer than that to start.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

_seen: list[dict] = []
_current = {"test": "(collection)"}
_stop = threading.Event()


def _note(service: str, detail: str) -> None:
    entry = {"test": _current["test"], "service": service, "detail": detail[:300]}
    if entry not in _seen:
        _seen.append(entry)


def _watch_chdb_in_process() -> None:
    from chdb.state import sqlitelike

    opened = sqlitelike.Connection.__init__

    def noting(self, *args, **kwargs):
        _note("chdb", f"in process: {args!r}")
        opened(self, *args, **kwargs)

    sqlitelike.Connection.__init__ = noting


def _descendants(root: int) -> dict[int, str]:
    """Each process below `root`: its command line."""
    parents, commands = {}, {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            commands[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
    below = {}
    for pid in parents:
        ancestor, hops = parents.get(pid), 0
        while ancestor and ancestor != root and hops < 64:
            ancestor, hops = parents.get(ancestor), hops + 1
        if ancestor == root:
            below[pid] = commands.get(pid, "")
    return below


def _watch_children() -> None:
    me = os.getpid()
    while not _stop.wait(0.05):
        for command in _descendants(me).values():
            program = os.path.basename(command.split(" ", 1)[0])
            if program == "java":
                _note("jvm", command)
            elif "chdb" in command.lower():
                _note("chdb", f"child: {command}")


def pytest_configure(config) -> None:
    _watch_chdb_in_process()
    threading.Thread(target=_watch_children, name="service-probe", daemon=True).start()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _current["test"] = item.nodeid
    yield
    _current["test"] = "(between tests)"


def pytest_unconfigure(config) -> None:
    _stop.set()
    Path(os.environ["SLUICE_SERVICE_PROBE"]).write_text(json.dumps(_seen, indent=1))
