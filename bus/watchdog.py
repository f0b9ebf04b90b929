"""Ends a service whose loops died or stalled, so its supervisor starts a fresh one.

A Python thread cannot be killed or reliably reset (a wedged librdkafka call,
a chDB handle mid-query), and chDB belongs to one process: a new process is
the one reset that always works. Transient trouble (broker gone, warehouse
down) never gets here: the loops retry it and only report `failing`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from bus.health import Health

log = logging.getLogger(__name__)


EXIT_UNHEALTHY = 75  # a loop of the service died or stalled (EX_TEMPFAIL: restarting it is the cure)


class Watchdog:
    """Checks `health` every `interval` s; calls `on_fatal(reasons)` once when a component is dead or stalled.

    While every component is alive it touches `heartbeat` (if given) on each check, so a supervisor
    outside can tell a live process from one wedged where no thread runs. Once fired, it gives the
    graceful stop `exit_grace` seconds and then ends the process with `hard_exit(EXIT_UNHEALTHY)`:
    a stop stuck in native code (a chDB query, a librdkafka call) must not keep a dead service up.
    """

    def __init__(self, health: Health, on_fatal: Callable[[dict], None], interval: float = 1.0,
                 heartbeat: Path | None = None, exit_grace: float | None = None,
                 hard_exit: Callable[[int], None] = os._exit) -> None:
        self._health = health
        self._on_fatal = on_fatal
        self._interval = interval
        self._heartbeat = heartbeat
        self._exit_grace = exit_grace
        self._hard_exit = hard_exit
        self._stop = threading.Event()
        self.fired: dict | None = None
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        self._beat()
        while not self._stop.wait(self._interval):
            fatal = self._health.fatal()
            if not fatal:
                self._beat()
                continue
            self.fired = fatal
            log.critical("unrecoverable loop(s), exiting so the supervisor restarts this service: %s", fatal)
            self._on_fatal(fatal)
            if self._exit_grace is not None and not self._stop.wait(self._exit_grace):
                log.critical("the service did not stop within %.0f s of its watchdog firing; exiting hard",
                             self._exit_grace)
                self._hard_exit(EXIT_UNHEALTHY)
            return

    def _beat(self) -> None:
        if self._heartbeat is not None:
            try:
                self._heartbeat.touch()
            except OSError as exc:  # a full or read-only disk must not take the service down
                log.warning("cannot touch the heartbeat file %s: %s", self._heartbeat, exc)
