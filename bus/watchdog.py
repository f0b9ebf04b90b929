"""Ends a service whose loops died or stalled, so its supervisor starts a fresh one.

A Python thread cannot be killed or reliably reset (a wedged librdkafka call,
a chDB handle mid-query), and chDB belongs to one process: a new process is
the one reset that always works. Transient trouble (broker gone, warehouse
down) never gets here: the loops retry it and only report `failing`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from bus.health import Health

log = logging.getLogger(__name__)


class Watchdog:
    """Checks `health` every `interval` s; calls `on_fatal(reasons)` once when a component is dead or stalled."""

    def __init__(self, health: Health, on_fatal: Callable[[dict], None], interval: float = 1.0) -> None:
        self._health = health
        self._on_fatal = on_fatal
        self._interval = interval
        self._stop = threading.Event()
        self.fired: dict | None = None
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            fatal = self._health.fatal()
            if fatal:
                self.fired = fatal
                log.critical("unrecoverable loop(s), exiting so the supervisor restarts this service: %s", fatal)
                self._on_fatal(fatal)
                return
