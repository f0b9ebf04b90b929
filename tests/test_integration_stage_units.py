"""The integrations stage's pure parts, without services: which partition owns an
integration, a poll's next request and its retry delay, what restarts a runner."""

from __future__ import annotations

import email.utils

from integrations.envelope import partition_of, raw_envelope
from integrations.poll import BACKOFF_MAX_S, RETRY_AFTER_MAX_S, initial_cursor, next_request, retry_delay
from integrations.stage import fingerprint
from integrations.status import RunnerStatus, StatusReporter

CURSOR = {"in": "query", "name": "version", "path": "toVersion", "initial": "0"}


def test_an_integration_has_one_stable_partition():
    assert partition_of("intg_abc", 8) == partition_of("intg_abc", 8)
    assert {partition_of(f"intg_{n}", 8) for n in range(200)} == set(range(8))


def test_the_envelope_names_the_integration_as_its_key():
    envelope = raw_envelope({"id": "intg_1"}, "org_a", b"{}", 41)
    assert (envelope["key_id"], envelope["route"], envelope["org_id"], envelope["catalog_offset"]) == (
        "intg_1", "integration", "org_a", 41)
    assert envelope["request_id"].startswith("req_") and envelope["idempotency_key"] is None


def test_the_cursor_goes_where_the_config_says():
    feed = "http://127.0.0.1:9/feed?site=3"
    assert next_request({"url": feed, "cursor": CURSOR}, None) == (feed, None)
    # Merged into the URL's own query, which stays.
    assert next_request({"url": feed, "cursor": CURSOR}, "7") == (feed + "&version=7", None)
    assert next_request({"url": feed + "&version=1", "cursor": CURSOR}, "7") == (feed + "&version=7", None)
    body_cursor = {**CURSOR, "in": "body", "name": "fromVersion"}
    config = {"url": feed, "method": "POST", "cursor": body_cursor, "body": {"typeName": "LogRecord"}}
    assert next_request(config, 12) == (feed, {"typeName": "LogRecord", "fromVersion": 12})
    assert next_request({**config, "body": None}, None) == (feed, {})  # a POST always sends a body


def test_a_stored_cursor_wins_over_the_initial_one():
    assert initial_cursor({"cursor": CURSOR}, None) == "0"
    assert initial_cursor({"cursor": CURSOR}, {"cursor": "9"}) == "9"
    assert initial_cursor({}, None) is None


def test_retry_after_is_honoured_and_errors_back_off():
    assert retry_delay(429, "7", 1, 0) == 7
    when = email.utils.formatdate(1_000_030, usegmt=True)
    assert retry_delay(503, when, 1, 1_000_000) == 30
    assert retry_delay(429, "999999", 1, 0) == RETRY_AFTER_MAX_S
    assert [retry_delay(500, None, n, 0) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert retry_delay(None, None, 50, 0) == BACKOFF_MAX_S
    assert retry_delay(429, "soon", 2, 0) == 2  # an unreadable Retry-After: the backoff


def test_a_runner_restarts_for_its_connection_not_for_its_mapping():
    body = {"kind": "mqtt", "config": {"url": "mqtt://h"}, "secrets": {"password": "p"}, "paused": False,
            "things": {"a": "thg_1"}, "templateId": "tmpl_1"}
    assert fingerprint(body) == fingerprint({**body, "things": {}, "templateId": "tmpl_2"})
    assert fingerprint(body) != fingerprint({**body, "secrets": {"password": "q"}})
    assert fingerprint(body) != fingerprint({**body, "paused": True})


class Writes:
    """A stand-in for the catalog writer: what was put."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []

    def put(self, kind, entity_id, org_id, body, timeout=15.0) -> dict:
        self.bodies.append(body)
        return body


def test_a_status_is_written_at_once_when_its_state_changes_and_its_counters_at_an_interval():
    writes = Writes()
    reporter = StatusReporter(writes, "integrations", interval=3600)
    status = RunnerStatus()
    reporter.report("intg_1", "org_a", status)
    reporter.report("intg_1", "org_a", status)  # unchanged: not written again
    status.state = "running"
    reporter.report("intg_1", "org_a", status)
    status.succeeded()  # a counter only: waits for the interval
    reporter.report("intg_1", "org_a", status)
    status.failed("sending", "the broker is away")
    reporter.report("intg_1", "org_a", status)
    assert [(b["state"], b["messagesOut"]) for b in writes.bodies] == [("starting", 0), ("running", 0),
                                                                       ("failing", 1)]
    assert writes.bodies[-1]["lastError"]["reason"] == "the broker is away"
    assert writes.bodies[-1]["instance"] == "integrations"
