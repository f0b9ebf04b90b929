"""A secondary edge worker's hand-off: what it does not serve itself goes to the primary.

With several edge workers on one port (producers.edge.listeners) only the primary
holds the warehouse (embedded chDB locks its folder; it also runs the sinks
there), so only it serves the reads, the catalog and admin API and the docs. A
secondary worker serves the ingest routes (POST on a dialect's paths), its own
`/healthz`, `/readyz` and `/metrics`, and passes every other request, streamed
both ways, to the primary's Unix socket. The primary answers in its own words
(status, headers, error shape); when it cannot be reached the answer is 503
UNAVAILABLE with Retry-After, as for any unavailable dependency.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from bus.health import Health
from producers import dialects
from producers.edge.errors import ApiError

log = logging.getLogger(__name__)

LOCAL_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# Hop-by-hop headers (RFC 9110 §7.6.1) are each connection's own; the length is httpx's to set.
_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
                  b"upgrade"})


def served_locally(scope: Scope) -> bool:
    """Whether a secondary worker answers `scope` itself."""
    path = scope["path"]
    return path in LOCAL_PATHS or (scope["method"] == "POST" and dialects.dialect_for(path) is not None)


class ForwardToPrimary:
    """ASGI middleware for a secondary worker: requests it does not serve go to the primary."""

    def __init__(self, app: ASGIApp, socket_path: Path, timeout_s: float = 60.0) -> None:
        self.app = app
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        if self._client is None:  # in the server's loop, at the first forwarded request
            transport = httpx.AsyncHTTPTransport(uds=str(self.socket_path))
            self._client = httpx.AsyncClient(transport=transport, timeout=self.timeout_s)
        return self._client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or served_locally(scope):
            await self.app(scope, receive, send)
            return
        # Surrounding whitespace is not part of a field value (RFC 9110 §5.5); the client library refuses it.
        headers = [(k, v.strip()) for k, v in scope["headers"] if k not in _HOP]
        if scope.get("client"):
            headers.append((b"x-forwarded-for", scope["client"][0].encode()))
        # raw_path: the path as the client encoded it (ASGI: without the query string).
        url = "http://primary" + (scope.get("raw_path") or scope["path"].encode()).decode("latin1")
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin1")
        has_body = any(k == b"content-length" or k == b"transfer-encoding" for k, _ in scope["headers"])
        request = self.client().build_request(scope["method"], url, headers=headers,
                                              content=_body(receive) if has_body else None)
        try:
            reply = await self.client().send(request, stream=True)
        except httpx.LocalProtocolError as exc:
            # A request the primary could not be sent as is (say, a control character in a header).
            error = ApiError(400, "INVALID_REQUEST", f"the request cannot be forwarded: {exc}")
            await JSONResponse(dialects.error_body(scope["path"], error), status_code=400)(scope, receive, send)
            return
        except httpx.HTTPError as exc:
            log.warning("the primary edge worker did not answer %s %s: %s", scope["method"], scope["path"], exc)
            error = ApiError(503, "UNAVAILABLE", "the edge's primary worker is unavailable", retry_after=1)
            await JSONResponse(dialects.error_body(scope["path"], error), status_code=503,
                               headers={"Retry-After": "1"})(scope, receive, send)
            return
        try:
            headers = [(k, v) for k, v in reply.headers.raw if k.lower() not in _HOP]
            if reply.headers.get("connection", "").lower() == "close":
                # The primary stopped reading the body (a 413): this connection cannot carry another request either.
                headers.append((b"connection", b"close"))
            await send({"type": "http.response.start", "status": reply.status_code, "headers": headers})
            async for chunk in reply.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await reply.aclose()


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        if chunk := message.get("body", b""):
            yield chunk
        if not message.get("more_body"):
            return


class PrimaryProbe:
    """Is the primary worker answering? Asked once a second, answered as a health component, so a
    secondary's `/readyz` says whether the routes it forwards can be served (not ready, not fatal)."""

    def __init__(self, socket_path: Path, health: Health, interval: float = 1.0, timeout: float = 2.0) -> None:
        self._client = httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)), timeout=timeout)
        self._component = health.component("primary-edge", stall_after=30 + timeout)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="primary-probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._component.stopped()
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status = self._client.get("http://primary/readyz").status_code
                if status == 200:
                    self._component.ok()
                else:
                    self._component.failing(f"the primary edge worker is not ready ({status})")
            except httpx.HTTPError as exc:
                self._component.failing(f"the primary edge worker is unreachable: {exc}")
            self._stop.wait(self._interval)
