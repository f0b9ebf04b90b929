"""The processor's judge: a batch of requests and the catalog → the messages they produce
(frames, dialect rows, verdicts, dead letters, first verdicts, decided catalog entities).

Pure apart from its memory (the Idempotency-Key store, each org's recent cost): no Kafka,
no Faust, no waiting; processors.handling feeds it batches and sends what it returns.

Fairness: a batch is judged cheapest org first, each request within its CPU budget
(processors.budget).

Catalog: a request is judged on a view that has applied the catalog as its edge saw it
(the envelope's `catalog_offset`); one that decides a catalog entity, on a view caught up
to the catalog's end (processors.deciding_catalog). When the view is not there, the
request is not judged on a stale catalog: it gets a retryable 503 UNAVAILABLE verdict and
its dead letter (`sluice replay` sends it again), and its batch-mates go on.

Isolation: a request the processor fails to handle (a bug, an output too large for a
message) becomes that request's own verdict and dead letter (INTERNAL_ERROR, TOO_LARGE).
"""

from __future__ import annotations

import logging
import time
import traceback

import orjson

import schemas
from bus import metrics
from processors.budget import DEFAULT_CPU_SECONDS, OrgCosts
from processors.deciding_catalog import DecidingCatalog, StaleCatalog
from processors.idempotency import IdempotencyStore, first_verdict, idempotency_id, repeat_verdict
from processors.outcome import Outcome, failed, undecodable
from processors.rulebooks import Catalog, judge
from processors.splitting import encode_frame_batch, encode_record_batches
from schemas.topics import CATALOG, DEADLETTER, FRAMES, IDEMPOTENCY, RECORDS, RESULTS, MessageLimits

log = logging.getLogger(__name__)

# Kafka's framing of one record in a batch, on top of key and value (generous).
RECORD_OVERHEAD = 1024

Request = tuple[bytes, "dict | str"]  # (raw payload, its envelope or why it did not decode)
Message = tuple[str, bytes, bytes]  # (logical topic, key, value)

RETRY_AFTER_S = schemas.UNAVAILABLE_RETRY_AFTER_S  # what a client told "retry" by a lagging catalog waits


class Judge:
    """Judges batches of requests; one per processor, shared by its agents."""

    def __init__(self, seen: IdempotencyStore, limits: MessageLimits,
                 cpu_seconds: float = DEFAULT_CPU_SECONDS, costs: OrgCosts | None = None) -> None:
        self.seen, self.limits, self.cpu_seconds = seen, limits, cpu_seconds
        self.costs = costs or OrgCosts()

    def order(self, requests: list[Request]) -> list[Request]:
        """`requests` in the order they are judged: cheapest org first (processors.budget)."""
        return self.costs.order(requests, org_of)

    def one(self, request: Request, catalog: DecidingCatalog) -> list[Message] | None:
        """One request's messages, its judging charged to its org; None when it decides a
        catalog entity on a view neither known to be at the catalog's end nor known to be
        lagging: the caller catches the view up, sets `catalog.fresh` or `catalog.lagging`,
        and asks again (then it never is None). Never raises for a request."""
        started = time.thread_time()
        try:
            messages = self.messages(request, catalog)
        except StaleCatalog:
            if not catalog.lagging:
                return None
            messages = self.behind(request, "had not reached the catalog's end")
        self.costs.spent(org_of(request), time.thread_time() - started)
        return messages

    def messages(self, request: Request, catalog: DecidingCatalog) -> list[Message]:
        """One request's messages; raises StaleCatalog as `request_messages` does."""
        payload, envelope = request
        if isinstance(envelope, dict) and envelope.get("catalog_offset", -1) > catalog.applied_offset:
            return self.behind(request, f"had not applied offset {envelope['catalog_offset']}, "
                                        "the catalog its edge saw")
        return request_messages(payload, envelope, catalog, self.seen, self.limits, self.cpu_seconds)

    def behind(self, request: Request, why: str) -> list[Message]:
        """A request that cannot be judged yet: its retryable 503 verdict and dead letter."""
        envelope = request[1]
        outcome = failed(envelope, "UNAVAILABLE", f"the processor's view of the catalog {why}; nothing was "
                         f"written: send the request again in {RETRY_AFTER_S} s", 503)
        outcome.verdict["status"] = "failed"  # the processor could not handle it; the request may be fine
        log.warning("request %s: the catalog view %s; answered 503", envelope["request_id"], why)
        count(outcome)
        return encode(outcome, None, self.limits)


def org_of(request: Request) -> str | None:
    envelope = request[1]
    return envelope.get("org_id") if isinstance(envelope, dict) else None


def decode(payload: bytes) -> dict | str:
    """The envelope, or why it could not be decoded (foreign bytes must not stop the agent)."""
    try:
        return schemas.decode(schemas.RAW_ENVELOPE, payload)
    except Exception as exc:
        return str(exc) or type(exc).__name__


def request_messages(payload: bytes, envelope: dict | str, catalog: Catalog, seen: IdempotencyStore,
                     limits: MessageLimits, cpu_seconds: float = DEFAULT_CPU_SECONDS) -> list[Message]:
    """Every message one raw message produces, as (logical topic, key, value).

    Never raises for a request: an exception while judging or encoding it becomes
    its INTERNAL_ERROR verdict and dead letter, and an output that would not fit
    a message (frames are split, so only a pathological one) its TOO_LARGE.
    Raises StaleCatalog for one that decides a catalog entity on a view not known
    to be at the catalog's end (a DecidingCatalog's `require_fresh`).
    """
    try:
        outcome, first_of = _process(payload, envelope, catalog, seen, cpu_seconds)
        if outcome.catalog and isinstance(catalog, DecidingCatalog):
            catalog.require_fresh()
        # What an Idempotency-Key remembers: the verdict with the request's fingerprint.
        first = (first_of, first_verdict(outcome.verdict, envelope)) if first_of is not None else None
        messages = encode(outcome, first, limits)
    except StaleCatalog:
        raise
    except Exception as exc:
        if not isinstance(envelope, dict):
            raise  # an undecodable message has no request to blame; the batch exits uncommitted
        trace = "".join(traceback.format_exception(exc, limit=-6))[-4000:]
        log.error("request %s failed in the processor; dead-lettered as INTERNAL_ERROR:\n%s",
                  envelope["request_id"], trace)
        outcome = failed(envelope, "INTERNAL_ERROR", f"the processor failed: {type(exc).__name__}: {exc}")
        count(outcome)
        return encode(outcome, None, limits)
    largest = max(len(key) + len(value) for _, key, value in messages)
    if largest + RECORD_OVERHEAD > limits.output and isinstance(envelope, dict):
        # Its dead letter carries only the body, which fits (see MessageLimits).
        log.error("request %s: an output of %d bytes exceeds the %d-byte message limit",
                  envelope["request_id"], largest, limits.output)
        outcome = failed(envelope, "TOO_LARGE", f"an output of {largest} bytes exceeds the "
                         f"{limits.output}-byte message limit", 413)
        count(outcome)
        return encode(outcome, None, limits)
    count(outcome)
    if first is not None:
        seen.remember(*first)
    if outcome.catalog and isinstance(catalog, DecidingCatalog):
        catalog.remember(outcome.catalog)
    return messages


def encode(outcome: Outcome, first: tuple[str, dict] | None, limits: MessageLimits) -> list[Message]:
    """An outcome's encoded messages: first verdict of an idempotency key, decided catalog
    entities, frames and dialect table rows (split under the budget), dead letters, then the verdict."""
    messages = []
    request_key = outcome.request_id.encode()
    if first is not None:
        messages.append((IDEMPOTENCY, first[0].encode(), schemas.encode(schemas.VERDICT, first[1])))
    for entity in outcome.catalog:
        record = {"kind": entity["kind"], "id": entity["id"], "org_id": entity["org_id"],
                  "body": orjson.dumps(entity["body"]).decode(), "updated_at": int(time.time() * 1000)}
        messages.append((CATALOG, f"{entity['kind']}/{entity['id']}".encode(),
                         schemas.encode(schemas.CATALOG_RECORD, record)))
    for frame_batch in outcome.frames or ():  # or (): a rulebook with no readings may say None
        thing_key = frame_batch["thing_id"].encode()
        messages.extend((FRAMES, thing_key, value)
                        for value in encode_frame_batch(frame_batch, limits.frames_budget))
    if outcome.records:
        verdict = outcome.verdict
        for batch in outcome.records:
            messages.extend((RECORDS, request_key, value) for value in encode_record_batches(
                verdict["request_id"], verdict["org_id"], verdict["received_at"], batch["table"], batch["rows"],
                limits.frames_budget))
    for dead in outcome.dead_letters:
        messages.append((DEADLETTER, request_key, schemas.encode(schemas.DEAD_LETTER, dead)))
    if outcome.verdict is not None:
        verdict = {**outcome.verdict, "catalog_changed": True} if outcome.catalog else outcome.verdict
        messages.append((RESULTS, request_key, schemas.encode(schemas.VERDICT, verdict)))
    return messages


def count(outcome: Outcome) -> None:
    """An outcome in the metrics: its verdict (status, first error code), items ingested, dead letters."""
    verdict = outcome.verdict
    if verdict is not None:
        errors = verdict.get("errors") or ()
        metrics.VERDICTS.labels(verdict["status"], errors[0]["code"] if errors else "").inc()
        metrics.ITEMS.inc(verdict.get("frames_ingested") or 0)
    for dead in outcome.dead_letters:
        metrics.DEAD_LETTERS.labels(dead.get("reason") or "UNKNOWN").inc()


def _process(payload: bytes, envelope: dict | str, catalog: Catalog, seen: IdempotencyStore,
             cpu_seconds: float = DEFAULT_CPU_SECONDS) -> tuple[Outcome, str | None]:
    """Normalize one decoded raw message: (outcome, idempotency id to record it under).

    A repeat of an Idempotency-Key seen within the window gets the first verdict
    and is not reprocessed; an undecodable message becomes a dead letter.
    """
    if isinstance(envelope, str):
        log.error("dead-lettering an undecodable raw message: %s", envelope)
        return undecodable(payload, envelope), None
    key = idempotency_id(envelope)
    if key is not None:
        first = seen.first(key, envelope["received_at"])
        # The same request again (replayed after a crash, its first verdict already out): judge it
        # again, since its other outputs may not all have landed; they overwrite downstream.
        if first is not None and first["request_id"] != envelope["request_id"]:
            return Outcome(None, repeat_verdict(first, envelope)), None
    return judge(envelope, catalog, cpu_seconds), key
