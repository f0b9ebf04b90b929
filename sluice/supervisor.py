"""Restart what died, with exponential backoff; give up loudly on a crash loop.

Generic over what a child is: each is watched through two callables, `alive()`
and `restart()`, so the broker (a LocalKafka) and the services (subprocesses)
get the same policy. An exit code is not the only sign of death: a child that
reports a heartbeat (`silent_for()`) and lets it go stale past the liveness
timeout is wedged (stuck in native code, or a watchdog that fired and could not
exit), and is killed and restarted like a crash. A pass (`check`) never blocks longer than one restart.
The state of every child (pid, restarts, last exit) is kept in a small JSON
status file an operator (or a later metrics exporter) can read.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from bus.logs import ALWAYS

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RestartPolicy:
    backoff_s: float = 0.5  # before the first restart; doubles with each restart within the window
    max_backoff_s: float = 30.0
    crash_loop_restarts: int = 5  # this many restarts within the window: a crash loop, give up
    crash_loop_window_s: float = 120.0
    liveness_timeout_s: float = 30.0  # a heartbeat older than this: the child is wedged, kill it

    def delay(self, recent_restarts: int) -> float:
        return min(self.max_backoff_s, self.backoff_s * 2 ** recent_restarts)


@dataclasses.dataclass
class Watched:
    name: str
    alive: Callable[[], bool]
    restart: Callable[[], None]  # starts it again; may raise (counted as another crash)
    describe_exit: Callable[[], str] = lambda: "exited"
    pid: Callable[[], int | None] = lambda: None
    silent_for: Callable[[], float | None] = lambda: None  # seconds since its heartbeat; None: none to go by
    kill: Callable[[], None] = lambda: None  # ends it at once (SIGKILL)
    wedged: str = ""  # why it was killed, for its last_exit
    restarts: int = 0
    recent: collections.deque = dataclasses.field(default_factory=collections.deque)  # monotonic restart times
    restart_at: float | None = None  # when the pending restart is due
    state: str = "running"  # running, restarting, failed
    last_exit: str = ""


class Supervisor:
    def __init__(self, policy: RestartPolicy, status_path: Path | None = None) -> None:
        self.policy = policy
        self.status_path = status_path
        self.children: dict[str, Watched] = {}

    def watch(self, child: Watched) -> None:
        self.children[child.name] = child
        self.write_status()

    @property
    def failed(self) -> list[str]:
        return [c.name for c in self.children.values() if c.state == "failed"]

    def check(self) -> list[str]:
        """One pass: notice deaths, restart what is due. Returns the children given up on."""
        now = time.monotonic()
        changed = False
        for child in self.children.values():
            if child.state == "failed":
                continue
            if child.state == "running" and not child.alive():
                child.last_exit = child.wedged or child.describe_exit()
                child.wedged = ""
                changed = True
                self._schedule(child, now)
            elif child.state == "running" and not child.wedged:
                self._kill_if_wedged(child)
            if child.state == "restarting" and child.restart_at is not None and now >= child.restart_at:
                changed = True
                self._restart(child, now)
        if changed:
            self.write_status()
        return self.failed

    def _kill_if_wedged(self, child: Watched) -> None:
        silent = child.silent_for()
        if silent is None or silent <= self.policy.liveness_timeout_s:
            return
        child.wedged = f"was killed: no heartbeat for {silent:.0f} s (wedged)"
        log.error("%s has given no heartbeat for %.0f s although its process runs; killing it", child.name,
                  silent, extra=ALWAYS)
        child.kill()

    def _schedule(self, child: Watched, now: float) -> None:
        while child.recent and now - child.recent[0] > self.policy.crash_loop_window_s:
            child.recent.popleft()
        if len(child.recent) >= self.policy.crash_loop_restarts:
            child.state, child.restart_at = "failed", None
            log.critical("CRASH LOOP: %s %s after %d restarts within %.0f s; not restarting it again",
                         child.name, child.last_exit, len(child.recent), self.policy.crash_loop_window_s,
                         extra=ALWAYS)
            return
        delay = self.policy.delay(len(child.recent))
        child.state, child.restart_at = "restarting", now + delay
        log.error("%s %s; restarting it in %.1f s (restart %d)", child.name, child.last_exit, delay,
                  child.restarts + 1, extra=ALWAYS)

    def _restart(self, child: Watched, now: float) -> None:
        child.restarts += 1
        child.recent.append(now)
        try:
            child.restart()
        except Exception as exc:
            child.last_exit = f"failed to restart ({exc})"
            self._schedule(child, time.monotonic())
            return
        child.state, child.restart_at = "running", None
        log.warning("%s restarted (pid %s; %d restarts so far)", child.name, child.pid(), child.restarts,
                    extra=ALWAYS)

    def status(self) -> dict:
        return {"updated_at": time.time(), "children": {
            c.name: {"state": c.state, "pid": c.pid() if c.state == "running" else None, "restarts": c.restarts,
                     "restarts_in_window": len(c.recent), "last_exit": c.last_exit}
            for c in self.children.values()}}

    def write_status(self) -> None:
        if self.status_path is None:
            return
        self.status_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.status_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status(), indent=2) + "\n")
        os.replace(tmp, self.status_path)  # readers never see half a file
