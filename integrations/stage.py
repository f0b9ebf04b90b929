"""The stage's loop: run the integrations this instance owns, as the catalog describes them.

Each turn keeps the group membership alive (assignment.poll), then reconciles: an integration
of a kind that connects (mqtt, http_poll), not paused, in an owned partition, gets a runner;
a runner whose integration changed (config, secrets, pause), went away or failed is stopped
(a failed one is started again after a backoff). Statuses are reported on every turn (the
reporter writes only what changed, at most every SLUICE_INTEGRATIONS_STATUS_INTERVAL_S).
"""

from __future__ import annotations

import logging
import threading
import time

import orjson

from bus.health import health
from catalog.integrations import KIND
from catalog.view import CatalogView
from integrations.assignment import Assignment
from integrations.durable import DurableProducer
from integrations.envelope import partition_of
from integrations.mqtt import MqttRunner
from integrations.poll import PollRunner
from integrations.status import StatusReporter

log = logging.getLogger(__name__)

CONNECTING_KINDS = ("mqtt", "http_poll")  # a webhook is received by the edge
RESTART_BACKOFF_MAX_S = 30.0


def fingerprint(body: dict) -> bytes:
    """What a runner is built from: a change to any of it restarts the runner (the things map and
    the template are the processors' concern, read per message)."""
    return orjson.dumps([body.get("kind"), body.get("config"), body.get("secrets"), body.get("paused")],
                        option=orjson.OPT_SORT_KEYS)


class Stage:
    def __init__(self, view: CatalogView, producer: DurableProducer, assignment_of, reporter: StatusReporter,
                 raw_topic: str, state_topic: str) -> None:
        self._view, self._producer, self._reporter = view, producer, reporter
        self._raw_topic, self._state_topic = raw_topic, state_topic
        self._assignment: Assignment = assignment_of(self._released)
        self._runners: dict[str, tuple[bytes, object]] = {}  # integration id -> (fingerprint, runner)
        self._not_before: dict[str, tuple[float, int]] = {}  # integration id -> (restart time, failures)
        self._lock = threading.Lock()  # runners are released from assignment callbacks, inside poll
        self._health = health().component("integrations-stage", stall_after=60.0)

    def run(self, stopping: threading.Event) -> None:
        """Run until `stopping` is set; blocks. Stops every runner before it leaves the group."""
        self._assignment.start()
        try:
            while not stopping.is_set():
                self._assignment.poll(0.2)
                self._reconcile()
                self._report()
                self._health.ok()
        finally:
            with self._lock:
                for integration_id in list(self._runners):
                    self._stop(integration_id)
            self._assignment.close()
            self._health.stopped()

    def _owned(self) -> dict[str, tuple[str, dict]]:
        partitions = self._assignment.partitions
        return {body["id"]: (org_id, body) for org_id, body in self._view.every(KIND)
                if body.get("kind") in CONNECTING_KINDS and not body.get("paused")
                and partitions and self._assignment.owns(partition_of(body["id"], partitions))}

    def _reconcile(self) -> None:
        wanted = self._owned()
        with self._lock:
            for integration_id, (print_, runner) in list(self._runners.items()):
                found = wanted.get(integration_id)
                if found is None or fingerprint(found[1]) != print_ or runner.failed:
                    self._stop(integration_id, failed=runner.failed)
            now = time.monotonic()
            for integration_id, (org_id, body) in wanted.items():
                if integration_id in self._runners or self._not_before.get(integration_id, (0, 0))[0] > now:
                    continue
                self._start(org_id, body)

    def _start(self, org_id: str, body: dict) -> None:
        partition = partition_of(body["id"], self._assignment.partitions)
        offset = lambda: self._view.applied_offset  # noqa: E731
        try:
            if body["kind"] == "mqtt":
                runner = MqttRunner(body, org_id, self._producer, self._raw_topic, offset)
            else:
                runner = PollRunner(body, org_id, self._producer, self._raw_topic, self._state_topic, partition,
                                    offset, self._assignment.states.get(body["id"]))
        except Exception:  # a config the API let through but no runner can use: never the stage's end
            log.exception("integration %s cannot be run; trying again in %.0f s", body["id"], RESTART_BACKOFF_MAX_S)
            self._not_before[body["id"]] = (time.monotonic() + RESTART_BACKOFF_MAX_S, 0)
            return
        try:
            runner.start()
        except Exception as exc:  # a broker name that does not resolve, say: report it, retry later
            runner.failed = True
            runner.status.failed("receiving", f"{type(exc).__name__}: {exc}")
        self._runners[body["id"]] = (fingerprint(body), runner)
        log.info("integration %s (%s): started", body["id"], body["kind"])

    def _stop(self, integration_id: str, failed: bool = False) -> None:
        _, runner = self._runners.pop(integration_id)
        runner.stop()
        if self._view.get(KIND, integration_id) is not None:  # a deleted one leaves no status behind
            self._reporter.report(integration_id, runner.org_id, runner.status, force=True)
        if failed:
            _, failures = self._not_before.get(integration_id, (0, 0))
            delay = min(2.0 ** failures, RESTART_BACKOFF_MAX_S)
            self._not_before[integration_id] = (time.monotonic() + delay, failures + 1)
            log.warning("integration %s failed (%s); starting it again in %.0f s", integration_id,
                        runner.status.last_error, delay)
        else:
            self._not_before.pop(integration_id, None)
        log.info("integration %s: stopped", integration_id)

    def _released(self, partitions: set[int]) -> None:
        with self._lock:
            for integration_id in [i for i in self._runners
                                   if partition_of(i, self._assignment.partitions) in partitions]:
                self._stop(integration_id)

    def running(self) -> list[tuple[str, str, object]]:
        """(integration id, kind, status) of each runner, for the metrics; safe from any thread."""
        with self._lock:
            return [(i, r.integration["kind"], r.status) for i, (_, r) in self._runners.items()]

    def _report(self) -> None:
        with self._lock:
            running = [(i, r) for i, (_, r) in self._runners.items()]
        for integration_id, runner in running:
            if runner.status.last_success_at and not runner.failed:
                self._not_before.pop(integration_id, None)  # it worked again: the next failure starts over
            self._reporter.report(integration_id, runner.org_id, runner.status)
