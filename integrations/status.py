"""What each running integration reports (state, last success, last error with its reason,
messages in and out), and the reporter that makes it readable: a catalog entity
`integration_status/{id}` (GET /v2/integrations/{id}/status), written when it changed and at
most every `interval` seconds for its counters (at once for a new state or error), so a busy
integration costs the catalog little.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from catalog.integrations import STATUS_KIND
from catalog.writer import CatalogWriteError, CatalogWriter

log = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class RunnerStatus:
    """Updated from a runner's threads; read by the stage's loop (plain fields, no invariants
    between them, so no lock)."""

    state: str = "starting"  # starting, connecting, running, backing_off, failing
    messages_in: int = 0  # received from the source (MQTT messages, polled pages)
    messages_out: int = 0  # made durable on the raw topic
    last_success_at: int | None = None
    last_error: dict | None = None  # {"at", "stage": receiving|sending, "reason"}
    extra: dict = field(default_factory=dict)  # a kind's own fields (a poll's cursor)

    def succeeded(self) -> None:
        self.messages_out += 1
        self.last_success_at = _now_ms()
        self.state = "running"

    def failed(self, stage: str, reason: str, state: str = "failing") -> None:
        # Reasons never carry secrets: runners pass what the source or broker said, not their config.
        self.last_error = {"at": _now_ms(), "stage": stage, "reason": reason[:500]}
        self.state = state

    def body(self, integration_id: str, instance: str) -> dict:
        return {"id": integration_id, "state": self.state, "messagesIn": self.messages_in,
                "messagesOut": self.messages_out, "lastSuccessAt": self.last_success_at,
                "lastError": self.last_error, "instance": instance, **self.extra}


class StatusReporter:
    def __init__(self, writer: CatalogWriter, instance: str, interval: float) -> None:
        self._writer = writer
        self._instance = instance
        self._interval = interval
        self._written: dict[str, tuple[float, dict]] = {}  # integration id -> (when, what)
        self._lock = threading.Lock()

    def report(self, integration_id: str, org_id: str, status: RunnerStatus, force: bool = False) -> None:
        """Write the status if it changed: at once when its state or last error did (or `force`),
        else once the last write is `interval` old (counters)."""
        body = status.body(integration_id, self._instance)
        with self._lock:
            when, what = self._written.get(integration_id, (0.0, None))
            if what == body:
                return
            news = what is None or (what["state"], what["lastError"]) != (body["state"], body["lastError"])
            if not (force or news) and time.monotonic() - when < self._interval:
                return
            self._written[integration_id] = (time.monotonic(), body)
        try:
            self._writer.put(STATUS_KIND, integration_id, org_id, {**body, "reportedAt": _now_ms()}, timeout=5)
        except CatalogWriteError as exc:
            log.warning("integrations: status of %s not written: %s", integration_id, exc)
