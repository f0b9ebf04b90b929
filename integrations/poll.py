"""An `http_poll` integration: a JSON endpoint requested on an interval, with the configured
headers, carrying a cursor from each response into the next request (a query parameter or a
body field: a feed version, a page token).

Each response is one message: its raw envelope is made durable first, then the cursor the
response names is written to the integrations topic (compacted, keyed by the integration) and
only then used. A restart, or another instance taking over, resumes from the last durable
cursor: the page after the last durable one is requested again (never skipped), and a page
made durable just before a crash may be produced twice, landing on the same reading keys.
When the cursor moved, the next page is requested at once (a feed catching up); otherwise after
`intervalSeconds`. Errors back off exponentially (1 s doubling to BACKOFF_MAX_S); a 429 or 503
waits what its `Retry-After` says.
"""

from __future__ import annotations

import email.utils
import logging
import threading
import time
from collections.abc import Callable

import httpx
import jmespath
import orjson

import schemas
from catalog.integrations import message_body
from integrations.assignment import STATE_KIND
from integrations.durable import DurableProducer
from integrations.envelope import raw_envelope
from integrations.status import RunnerStatus

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 30.0
DURABLE_TIMEOUT_S = 30.0
BACKOFF_MAX_S = 300.0
RETRY_AFTER_MAX_S = 3600.0
CAUGHT_UP_GAP_S = 0.05  # between two pages of a feed catching up


def next_request(config: dict, cursor: object) -> tuple[str, dict | None]:
    """(URL, JSON body) of the request carrying `cursor` (None: the first request, none). A query
    cursor is merged into the URL's own query (httpx's `params=` would replace it)."""
    spec = config.get("cursor")
    body = dict(config["body"]) if config.get("body") is not None else None
    params: dict = {}
    if spec and cursor is not None:
        if spec["in"] == "query":
            params[spec["name"]] = cursor
        else:
            body = {**(body or {}), spec["name"]: cursor}
    if config.get("method", "GET") == "POST" and body is None:
        body = {}
    return str(httpx.URL(config["url"]).copy_merge_params(params)), body


def retry_delay(status: int | None, retry_after: str | None, failures: int, now: float) -> float:
    """Seconds to wait after a failed request: what a 429/503's Retry-After says (seconds or an
    HTTP date), else 1 s doubling with each consecutive failure, up to BACKOFF_MAX_S."""
    if status in (429, 503) and retry_after:
        retry_after = retry_after.strip()
        if retry_after.isdigit():
            return min(float(retry_after), RETRY_AFTER_MAX_S)
        try:
            when = email.utils.parsedate_to_datetime(retry_after).timestamp()
            return min(max(0.0, when - now), RETRY_AFTER_MAX_S)
        except (TypeError, ValueError):
            pass
    return min(2.0 ** max(0, failures - 1), BACKOFF_MAX_S)


def initial_cursor(config: dict, state: dict | None) -> object:
    if state is not None and "cursor" in state:
        return state["cursor"]
    return (config.get("cursor") or {}).get("initial")


class PollRunner:
    def __init__(self, integration: dict, org_id: str, producer: DurableProducer, raw_topic: str, state_topic: str,
                 partition: int, catalog_offset: Callable[[], int], state: dict | None) -> None:
        self.integration, self.org_id = integration, org_id
        self.status = RunnerStatus()
        self.failed = False
        self._producer, self._raw_topic, self._state_topic = producer, raw_topic, state_topic
        self._partition, self._catalog_offset = partition, catalog_offset
        self._config = integration["config"]
        self._cursor = initial_cursor(self._config, state)
        self._next = jmespath.compile(self._config["cursor"]["path"]) if self._config.get("cursor") else None
        self._key = integration["id"].encode()
        self._last_status: int | None = None  # of the last request, for its retry delay
        self._retry_after: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"poll-{integration['id']}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Blocks until the loop ended (at most a request's timeout): no cursor is written after."""
        self._stop.set()
        self._thread.join(timeout=REQUEST_TIMEOUT_S + DURABLE_TIMEOUT_S)

    def _run(self) -> None:
        failures = 0
        headers = {"Accept": "application/json", **self.integration.get("secrets", {}).get("headers", {})}
        with httpx.Client(timeout=REQUEST_TIMEOUT_S, headers=headers) as client:
            while not self._stop.is_set():
                wait = self._turn(client)
                if wait is None:
                    failures += 1
                    wait = retry_delay(self._last_status, self._retry_after, failures, time.time())
                else:
                    failures = 0
                self.status.extra["cursor"] = self._cursor
                self._stop.wait(wait)

    def _turn(self, client: httpx.Client) -> float | None:
        """One request; the seconds until the next, or None after a failure."""
        self._last_status = self._retry_after = None
        url, body = next_request(self._config, self._cursor)
        try:
            reply = client.request(self._config.get("method", "GET"), url, json=body)
        except httpx.HTTPError as exc:
            self.status.failed("receiving", f"{type(exc).__name__}: {exc}")
            return None
        self._last_status, self._retry_after = reply.status_code, reply.headers.get("retry-after")
        if reply.status_code != 200:
            state = "backing_off" if reply.status_code in (429, 503) else "failing"
            self.status.failed("receiving", f"the endpoint answered {reply.status_code}", state=state)
            return None
        try:
            document = orjson.loads(reply.content)
        except orjson.JSONDecodeError as exc:
            self.status.failed("receiving", f"the endpoint's answer is not JSON: {exc}")
            return None
        self.status.messages_in += 1
        if self._stop.is_set():
            return 0.0  # released meanwhile: the next owner requests this page again
        envelope = raw_envelope(self.integration, self.org_id, message_body(None, {}, reply.content, True),
                                self._catalog_offset())
        try:
            self._producer.send_and_wait(self._raw_topic, self._key, schemas.encode(schemas.RAW_ENVELOPE, envelope),
                                         DURABLE_TIMEOUT_S)
            self.status.succeeded()
            moved = self._advance(document)
        except RuntimeError as exc:
            self.status.failed("sending", str(exc))
            return None
        return CAUGHT_UP_GAP_S if moved else self._config.get("intervalSeconds", 60)

    def _advance(self, document: object) -> bool:
        """Make the response's cursor durable, then use it; False when it names none or the same."""
        if self._next is None:
            return False
        found = self._next.search(document)
        if found is None or found == self._cursor or self._stop.is_set():
            return False
        record = {"kind": STATE_KIND, "id": self.integration["id"], "org_id": self.org_id,
                  "body": orjson.dumps({"cursor": found}).decode(), "updated_at": int(time.time() * 1000)}
        self._producer.send_and_wait(self._state_topic, self._key, schemas.encode(schemas.CATALOG_RECORD, record),
                                     DURABLE_TIMEOUT_S, partition=self._partition)
        self._cursor = found
        return True
