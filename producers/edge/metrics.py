"""The edge's request metrics: an ASGI middleware outside every other, and `/metrics`.

Requests are labelled by route template (`/v2/things/{thing_id}/…`), never by
the path a client sent, so ids never become labels; a request no route matched
(404, or refused before routing, e.g. a 413) is `route="unmatched"`.
"""

from __future__ import annotations

import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from bus import metrics
from producers.edge.exchange import Exchange

REJECTED = {408, 413, 429, 503}


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        exchange = Exchange(receive, send)
        try:
            await self.app(scope, exchange.receive, exchange.send)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            metrics.HTTP_REQUESTS.labels(route, scope["method"], str(exchange.status)).inc()
            metrics.HTTP_DURATION.labels(route).observe(time.monotonic() - started)
            if exchange.body:
                metrics.HTTP_BODY.labels(route).observe(exchange.body)
            if exchange.status in REJECTED:
                metrics.HTTP_REJECTS.labels(str(exchange.status)).inc()


async def metrics_endpoint(request: Request) -> Response:
    # In a thread: collecting consumer lag asks the broker (bounded by its timeout).
    content, content_type = await run_in_threadpool(metrics.exposition)
    return Response(content, media_type=content_type)
