"""The edge's HTTP/1.1 protocol: uvicorn's httptools protocol with slow-client defences.

uvicorn 0.54 has a keep-alive timeout (between requests) and a global
`limit_concurrency`, but nothing bounds how long a client may take to send a
request's headers or body, nor how many connections one client holds: a client
trickling a byte a second keeps a connection (and a task) forever. This
subclass adds, per connection:

- a header deadline (`SLUICE_HEADER_TIMEOUT_S`) from connect, or from the first
  byte of a later request, until the headers are complete;
- a body deadline (`SLUICE_BODY_TIMEOUT_S`) from the end of the headers until
  the body is complete;
- a cap on open connections per client IP (`SLUICE_MAX_CONNECTIONS_PER_IP`).

A missed deadline answers 408 (429 for the cap) in the API's error shape when
no response has started, then closes the connection. Pass the class returned
by `edge_protocol(settings)` to uvicorn as `http=`.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bus import metrics
from config import Settings
from producers.edge.errors import ApiError

log = logging.getLogger(__name__)


def error_bytes(error: ApiError, headers: dict[str, str] | None = None) -> bytes:
    """A complete HTTP/1.1 error response that closes the connection."""
    body = json.dumps(error.body()).encode()
    head = [f"HTTP/1.1 {error.status} {_REASONS.get(error.status, '')}", "content-type: application/json",
            f"content-length: {len(body)}", "connection: close",
            *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


_REASONS = {408: "Request Timeout", 429: "Too Many Requests"}


class EdgeHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines and the per-IP cap; `edge_protocol` sets its bounds."""

    header_timeout: float
    body_timeout: float
    max_per_ip: int
    open_per_ip: collections.Counter[str]  # shared by one server's connections only

    # Phases of the connection: "headers" (a request is arriving), "body",
    # "app" (the request is whole; the app has it), "idle" (between requests:
    # uvicorn's keep-alive timeout applies).
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._counted_ip: str | None = None
        self._phase = "headers"
        ip = self.client[0] if self.client else None
        if ip is not None and self.max_per_ip and self.open_per_ip[ip] >= self.max_per_ip:
            log.warning("refused a connection from %s: it already holds %d", ip, self.max_per_ip)
            self._refuse(ApiError(429, "TOO_MANY_CONNECTIONS",
                                  f"at most {self.max_per_ip} open connections per client",
                                  limit=self.max_per_ip), {"Retry-After": "1"})
            return
        if ip is not None:
            self.open_per_ip[ip] += 1
            self._counted_ip = ip
        self._arm(self.header_timeout, "headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted_ip is not None:
            self.open_per_ip[self._counted_ip] -= 1
            if not self.open_per_ip[self._counted_ip]:
                del self.open_per_ip[self._counted_ip]
            self._counted_ip = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase == "idle":
            self._phase = "headers"
            self._arm(self.header_timeout, "headers")
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._phase != "headers" or self._deadline is None:
            self._phase = "headers"
            self._arm(self.header_timeout, "headers")

    def on_headers_complete(self) -> None:
        self._phase = "body"
        self._arm(self.body_timeout, "body")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        answered = self.cycle is not None and self.cycle.response_complete
        # Answered before the body was read whole: the connection is idle again.
        self._phase = "idle" if answered else "app"
        if answered:
            self._arm(self.header_timeout, "headers")
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self._phase == "app":
            self._phase = "idle"
        super().on_response_complete()

    def _arm(self, seconds: float, part: str) -> None:
        self._disarm()
        if seconds > 0:
            self._deadline = self.loop.call_later(seconds, self._timed_out, part, seconds)

    def _disarm(self) -> None:
        if getattr(self, "_deadline", None) is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self, part: str, seconds: float) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        client = self.client[0] if self.client else "?"
        log.warning("closed a connection from %s: request %s not complete within %g s", client, part, seconds)
        cycle = self.cycle
        in_flight = cycle is not None and not cycle.response_complete and self._phase == "body"
        if in_flight and cycle.response_started:
            self._close(cycle)  # too late for an error reply
            return
        self._refuse(ApiError(408, "REQUEST_TIMEOUT", f"request {part} not complete within {seconds:g} s",
                              timeout_s=seconds), cycle=cycle if in_flight else None)

    def _refuse(self, error: ApiError, headers: dict[str, str] | None = None, cycle=None) -> None:
        metrics.HTTP_REJECTS.labels(str(error.status)).inc()  # never reaches the app's middleware
        self.transport.write(error_bytes(error, headers))
        self._close(cycle)

    def _close(self, cycle) -> None:
        if cycle is not None:
            # The app is told the client is gone: its receive() returns http.disconnect,
            # its send() becomes a no-op.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()


def edge_protocol(settings: Settings) -> type[HttpToolsProtocol]:
    """The protocol class for one server: its connection counts are shared by its connections only."""
    return type("EdgeHttpProtocol", (EdgeHttpProtocol,), {
        "header_timeout": settings.header_timeout_s, "body_timeout": settings.body_timeout_s,
        "max_per_ip": settings.max_connections_per_ip, "open_per_ip": collections.Counter()})
