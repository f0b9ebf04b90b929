"""What each long-running loop of a service reports, and what readiness reads.

A service is one process; its loops (consumer threads, topic tails, the broker
probe) each own a `Component` in the process's registry and report on it:
`beat()` on every turn of the loop, `ok()` / `failing(reason)` as their work
succeeds or fails, `stopped()` when they end. Readiness is "every component
ok"; a component that is dead (its loop ended without being asked to) or
stalled (no beat for its `stall_after`) is fatal: the service's watchdog ends
the process so its supervisor starts a fresh one.
"""

from __future__ import annotations

import threading
import time

STARTING, OK, FAILING, DEAD, STOPPED = "starting", "ok", "failing", "dead", "stopped"


class Component:
    def __init__(self, registry: "Health", name: str, stall_after: float) -> None:
        self.name = name
        self.stall_after = stall_after
        self._registry = registry
        self._state = STARTING
        self._reason = ""
        self._last_beat = time.monotonic()

    def beat(self) -> None:
        """The loop is turning (call at least every `stall_after` seconds)."""
        self._last_beat = time.monotonic()

    def ok(self) -> None:
        if self._state != DEAD:
            self._state, self._reason = OK, ""
        self.beat()

    def failing(self, reason: str) -> None:
        """Alive and retrying, but not doing its job (not ready)."""
        if self._state != DEAD:
            self._state, self._reason = FAILING, reason
        self.beat()

    def dead(self, reason: str) -> None:
        """The loop ended on its own, or cannot recover in place: fatal for the service (and final)."""
        self._state, self._reason = DEAD, reason

    def stopped(self) -> None:
        """The loop ended because it was asked to: forget it."""
        self._state = STOPPED
        self._registry.remove(self)

    def status(self) -> dict:
        silent = time.monotonic() - self._last_beat
        if self._state in (STARTING, OK, FAILING) and silent > self.stall_after:
            return {"state": "stalled", "ok": False, "fatal": True, "reason": f"no progress for {silent:.0f} s"}
        return {"state": self._state, "ok": self._state == OK, "fatal": self._state == DEAD,
                **({"reason": self._reason} if self._reason else {})}


class Health:
    """The components of one process, by name (a later one of the same name replaces the earlier)."""

    def __init__(self) -> None:
        self._components: dict[str, Component] = {}
        self._lock = threading.Lock()

    def component(self, name: str, stall_after: float = 60.0) -> Component:
        component = Component(self, name, stall_after)
        with self._lock:
            self._components[name] = component
        return component

    def remove(self, component: Component) -> None:
        with self._lock:
            if self._components.get(component.name) is component:
                del self._components[component.name]

    def snapshot(self) -> dict[str, dict]:
        with self._lock:
            components = list(self._components.values())
        return {c.name: c.status() for c in components}

    def ready(self) -> tuple[bool, dict[str, dict]]:
        snapshot = self.snapshot()
        return all(s["ok"] for s in snapshot.values()), snapshot

    def fatal(self) -> dict[str, dict]:
        """Components that are dead or stalled."""
        return {name: s for name, s in self.snapshot().items() if s["fatal"]}


_PROCESS = Health()


def health() -> Health:
    """This process's registry: one process runs one service."""
    return _PROCESS
