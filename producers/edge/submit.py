"""The one way a request reaches the pipeline, whatever its dialect.

A dialect's route authenticates, checks its body's outline, then calls
`submit`: rate limit, Idempotency-Key bounds, the raw envelope, the produce
that answers only after the broker's ack, and (when the caller asked to wait)
the processor's verdict from the results topic. Errors are ApiErrors, which
the app renders in the dialect's own shape.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

import orjson
from fastapi import Request
from starlette.concurrency import run_in_threadpool

import schemas
from catalog.ids import request_id as new_request_id
from producers.edge.auth import Principal
from producers.edge.errors import ApiError
from producers.edge.raw_producer import ProducerUnavailable

DEFAULT_WAIT_S = 10.0
PREFER_WAIT = re.compile(r"(?:^|[;,\s])wait\s*=\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
MAX_IDEMPOTENCY_KEY = 255
CATALOG_CATCH_UP_S = 5.0  # bounds a sync reply's wait for the catalog view after its verdict


@dataclass(frozen=True)
class Target:
    """What a request writes to; `route` names the processor's rulebook for it."""

    route: str
    thing_id: str | None = None
    stream: str | None = None
    template_id: str | None = None
    # Overrides the partition key; it must keep every repeat of an Idempotency-Key together.
    partition: str | None = None

    @property
    def partition_key(self) -> bytes:
        # All requests for one target share a partition, so one processor sees them (and
        # every repeat of an Idempotency-Key, whose scope includes the target) in order.
        return (self.partition or self.thing_id or self.stream or self.template_id or self.route).encode()


@dataclass(frozen=True)
class Submitted:
    request_id: str
    verdict: dict | None  # the processor's verdict when the caller waited and it came in time
    waited_s: float | None  # the wait applied, for `Preference-Applied`


def requested_wait(request: Request, wait: bool, max_wait: float) -> float | None:
    """Seconds to wait for the verdict (RFC 7240 `Prefer: wait=N`, or `?wait=true`), or None."""
    match = PREFER_WAIT.search(request.headers.get("prefer", ""))
    if match:
        return min(float(match.group(1)), max_wait)
    return min(DEFAULT_WAIT_S, max_wait) if wait else None


def idempotency_key(request: Request) -> str | None:
    """The request's Idempotency-Key header, bounded (400 otherwise)."""
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        raise ApiError(400, "INVALID_PAYLOAD", f"Idempotency-Key must be 1–{MAX_IDEMPOTENCY_KEY} characters",
                       field="Idempotency-Key")
    return key


def outline_error(field: str, reason: str, **details: object) -> ApiError:
    """A body's outline is wrong: 400 INVALID_PAYLOAD naming the field and the reason."""
    return ApiError(400, "INVALID_PAYLOAD", f"{field}: {reason}", field=field, reason=reason, **details)


def json_document(body: bytes) -> object:
    """The body parsed as JSON, or 400 at once for an empty body or one that is not JSON:
    the part of every dialect's outline check that is the same for all of them."""
    if not body or body.isspace():
        raise outline_error("body", "the request body is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise outline_error("body", f"not valid JSON ({exc})") from None


def check_rate(request: Request, who: Principal) -> None:
    """429 with Retry-After when the caller's key is over its rate."""
    retry_after = request.app.state.rate_limiter.acquire(who.key["id"])
    if retry_after:
        raise ApiError(429, "RATE_LIMITED", "too many requests for this API key", retry_after=retry_after)


async def submit(request: Request, who: Principal, target: Target, body: bytes,
                 wait_s: float | None, idempotency: str | None = None) -> Submitted:
    """Land `body` on the raw topic for `target`; with `wait_s`, wait that long for its verdict.
    `idempotency` is the Idempotency-Key when the route derives its own (else the header's).

    Call after the rate check and the body's outline check. Blocks (asynchronously)
    until the broker acknowledged the message, at most the producer's delivery
    timeout; raises ApiError 503/429 with Retry-After when it was not accepted.
    """
    state = request.app.state
    request_id = new_request_id()
    envelope = {
        "request_id": request_id,
        "org_id": who.org_id,
        "key_id": who.key["id"],
        "route": target.route,
        "received_at": int(time.time() * 1000),
        "thing_id": target.thing_id,
        "stream": target.stream,
        "template_id": target.template_id,
        "idempotency_key": idempotency or idempotency_key(request),
        # Cut: headers are not size-limited, and a max-size body must still fit the raw topic's limit.
        "content_type": request.headers.get("content-type", "application/json")[:255],
        # What this edge knew of the catalog: the processor catches up to it before judging.
        "catalog_offset": state.catalog.view.applied_offset,
        "body": body,
    }
    pending = state.results.expect(request_id) if wait_s else None
    try:
        await state.raw_producer.send(state.topics.raw, target.partition_key,
                                      schemas.encode(schemas.RAW_ENVELOPE, envelope))
        if pending is not None:
            try:
                verdict = await asyncio.wait_for(pending, wait_s)
                if verdict.get("catalog_changed"):
                    # Read-your-writes: a sync caller lists the ship its push just created.
                    await run_in_threadpool(state.catalog.view.catch_up_to_end, CATALOG_CATCH_UP_S)
                return Submitted(request_id, verdict, wait_s)
            except asyncio.TimeoutError:
                pass  # still processing: answer as an async request would
    except ProducerUnavailable as exc:
        raise ApiError(exc.status, "UNAVAILABLE" if exc.status == 503 else "RATE_LIMITED", str(exc),
                       retry_after=exc.retry_after) from None
    finally:
        if pending is not None:
            state.results.forget(request_id)
    return Submitted(request_id, None, wait_s)
