"""Shedding at the edge: async ingest requests answered 503 while the pipeline is too far behind.

An ASGI middleware in front of the body limits, so a shed request costs its headers only:
the body is never read (the connection stays usable; the server discards the rest of the
body as it arrives). It matches POSTs to the dialects' ingest routes, on the fast path and
FastAPI's alike; the catalog API, reads, health and metrics never reach the rule.
The decision is producers.edge.admission's, on the last view of bus.backlog_watch.

Sync requests (`Prefer: wait=N`, `?wait=true`) are always admitted: each holds its caller
until the processor's verdict, so a client's sync traffic slows down by itself as the
pipeline falls behind (a backfill, `sluice import`, sends only these), and a device that
asked for its verdict gets one.

A shed request is answered in its dialect's error shape, `503 UNAVAILABLE`, with
`Retry-After`; its key's share counts only what the edge accepted (2xx).
"""

from __future__ import annotations

import time

from fastapi.routing import APIRoute
from starlette.datastructures import QueryParams
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from bus import metrics
from producers import dialects
from producers.edge.admission import Admission, Shed
from producers.edge.errors import ApiError
from producers.edge.exchange import Exchange
from producers.edge.submit import PREFER_WAIT

_TRUE = frozenset({"1", "true", "yes", "on"})  # what FastAPI reads as a true bool


def caller_key(scope: Scope) -> str:
    """The request's API key as sent (X-Api-Key, else Authorization), unchecked: only a name for its share."""
    authorization = ""
    for name, value in scope["headers"]:
        if name == b"x-api-key":
            return value.decode("latin-1")
        if name == b"authorization":
            authorization = value.decode("latin-1")
    return authorization


def is_sync(scope: Scope) -> bool:
    """Whether the caller waits for its verdict: `Prefer: wait=N` with N > 0, or `?wait=true`."""
    for name, value in scope["headers"]:
        if name == b"prefer":
            match = PREFER_WAIT.search(value.decode("latin-1"))
            if match and float(match.group(1)) > 0:
                return True
    query = scope["query_string"]
    return bool(query) and QueryParams(query).get("wait", "").lower() in _TRUE


def shed_reply(path: str, shed: Shed, prefix: str) -> JSONResponse:
    stage = shed.backlog.stage.removeprefix(prefix)
    error = ApiError(503, "UNAVAILABLE",
                     f"the pipeline is behind ({shed.backlog.seconds:.0f} s of work waiting in front of {stage}); "
                     f"retry after {shed.retry_after} s", reason=shed.reason, stage=stage,
                     retry_after=shed.retry_after)
    return JSONResponse(dialects.error_body(path, error), status_code=503,
                        headers={"Retry-After": str(shed.retry_after)})


class ShedOverload:
    def __init__(self, app: ASGIApp, routes: list[APIRoute], admission: Admission, topic_prefix: str) -> None:
        """`routes`: the ingest routes; their POSTs are the requests that may be shed."""
        self.app = app
        self._routes = tuple((route, route.path_regex) for route in routes if "POST" in route.methods)
        self._admission = admission
        self._prefix = topic_prefix

    def _ingest_route(self, scope: Scope) -> APIRoute | None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        return next((route for route, regex in self._routes if regex.match(scope["path"])), None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._ingest_route(scope) if self._admission.enabled else None
        if route is None:
            await self.app(scope, receive, send)
            return
        key = caller_key(scope)
        if not is_sync(scope):
            watch = getattr(scope["app"].state, "backlog_watch", None)
            shed = self._admission.decide(key, watch.current() if watch else None, time.monotonic())
            if shed is not None:
                metrics.EDGE_SHED.labels(shed.reason).inc()
                scope["route"] = route  # the request metrics label it by its route
                await shed_reply(scope["path"], shed, self._prefix)(scope, receive, send)
                return
        exchange = Exchange(receive, send)
        await self.app(scope, exchange.receive, exchange.send)
        if exchange.status < 300:
            self._admission.accepted(key, exchange.body, time.monotonic())
