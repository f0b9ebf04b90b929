"""Posting one batch to `POST /v2/thing/{id}/data` until it has a verdict.

Each batch is sent with its Idempotency-Key and `Prefer: wait=N`, so the reply is
the processor's verdict (the edge holds at most `wait` seconds, then answers 202).
- 200: its values landed (`Idempotent-Replayed: true`: an earlier send of it did).
- 429 / 503 / 5xx without a verdict / a dropped connection: wait `Retry-After` (or
  back off, doubling up to 30 s) and send it again, under the same key.
- 400 / 413 / 422 for a batch of several frames: the batch is halved and each half
  sent under a key derived from its own, so one bad frame costs only itself.
- 404 / 424 (the thing) or a one-frame rejection: its values are rejected, with the code.
- 401 / 403: the key cannot write here; the import stops (ImportAborted).
Blocks on HTTP; safe to call from several threads with one httpx.Client.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter

import httpx

from sluice.backfill.batches import Batch

RETRY_STATUSES = {429, 500, 502, 503, 504}
SPLIT_STATUSES = {400, 413, 422}
MAX_BACKOFF_S = 30.0


class ImportAborted(RuntimeError):
    """The edge refused the import as a whole (the key), or kept failing past the retry budget."""


@dataclasses.dataclass
class Outcome:
    """What became of one batch's values."""

    accepted: int = 0
    pending: int = 0  # 202: durable on Kafka, verdict not in within the wait
    replayed: int = 0  # accepted by an earlier send (Idempotent-Replayed)
    rejected: Counter = dataclasses.field(default_factory=Counter)  # reason → values
    requests: int = 0
    retries: int = 0


class Sender:
    def __init__(self, client: httpx.Client, wait_s: float = 30.0, max_attempts: int = 50,
                 stop: threading.Event | None = None) -> None:
        self.client = client
        self.wait_s = wait_s
        self.max_attempts = max_attempts
        self.stop = stop or threading.Event()

    def send(self, batch: Batch) -> Outcome:
        outcome = Outcome()
        pending = [batch]
        while pending:
            self._send_one(pending.pop(), outcome, pending)
        return outcome

    def _send_one(self, batch: Batch, outcome: Outcome, pending: list[Batch]) -> None:
        reply = self._post(batch, outcome)
        status = reply.status_code
        if status == 200:
            outcome.accepted += batch.values
            if reply.headers.get("idempotent-replayed") == "true":
                outcome.replayed += batch.values
        elif status == 202:
            outcome.pending += batch.values
        elif status in (401, 403):
            raise ImportAborted(f"the edge refused the key ({status}): {_reason(reply)}")
        elif status in SPLIT_STATUSES and len(batch.frames) > 1:
            pending.extend(reversed(batch.halves()))
        else:
            outcome.rejected[_reason(reply)] += batch.values

    def _post(self, batch: Batch, outcome: Outcome) -> httpx.Response:
        headers = {"Idempotency-Key": batch.key, "Prefer": f"wait={self.wait_s:g}",
                   "Content-Type": "application/json"}
        backoff = 0.5
        for _ in range(self.max_attempts):
            if self.stop.is_set():
                raise ImportAborted("stopped")
            outcome.requests += 1
            try:
                reply = self.client.post(f"/v2/thing/{batch.thing_id}/data", content=batch.body, headers=headers,
                                         timeout=self.wait_s + 30)
            except httpx.TransportError:
                reply = None
            if reply is not None and not (reply.status_code in RETRY_STATUSES and _retryable(reply)):
                return reply
            outcome.retries += 1
            delay = backoff
            if reply is not None and reply.headers.get("retry-after", "").isdigit():
                delay = max(float(reply.headers["retry-after"]), 0.1)
            self.stop.wait(delay)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
        raise ImportAborted(f"batch {batch.key} got no verdict after {self.max_attempts} attempts")


def _retryable(reply: httpx.Response) -> bool:
    """A 500 that is the processor's verdict on this body (INTERNAL_ERROR) would only repeat itself."""
    return not (reply.status_code == 500 and "x-request-id" in reply.headers)


def _reason(reply: httpx.Response) -> str:
    try:
        error = reply.json()["error"]
        code = error.get("code", str(reply.status_code))
        field = (error.get("details") or {}).get("field")
        return f"{code} ({field})" if field and code in ("UNKNOWN_METRIC", "INVALID_VALUE") else code
    except (ValueError, KeyError, TypeError):
        return f"HTTP {reply.status_code}"
