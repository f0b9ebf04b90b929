"""Request body limits, one per route class, enforced in one place; compressed bodies inflated there.

An ASGI middleware in front of every route: a declared Content-Length over the
limit is refused before the app runs; otherwise the body is counted while it
streams in, and the request is refused at the first byte over the limit (it is
never buffered whole). Ingest routes (every dialect's, and the app's other routes that take
readings or much at once, such as an integration's webhook and its bulk mapping) take
`SLUICE_MAX_BODY_BYTES`; every other route (catalog, keys, admin) the smaller
`SLUICE_MAX_API_BODY_BYTES`.

A body sent with `Content-Encoding: gzip` or `zstd` is inflated here, chunk by
chunk (producers.edge.content_coding), and the limit holds for both the bytes sent and
the inflated bytes; the app sees the plain body and no Content-Encoding. Another
coding is refused before the app runs (415), a body that does not decode as its
coding while it streams (400).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producers import dialects
from producers.edge.content_coding import CODINGS, Inflater, coding_of
from producers.edge.errors import ApiError

# What the app must not see of an inflated body: its coding, and the length it had on the wire.
_WIRE_HEADERS = frozenset({b"content-encoding", b"content-length"})


class BodyRefused(Exception):
    """Raised into the app by `receive` when the body is refused (too large, or not of its coding)."""


def too_large(limit: int) -> ApiError:
    return ApiError(413, "PAYLOAD_TOO_LARGE", f"request body exceeds {limit} bytes", limit=limit)


def refusal(path: str, error: ApiError) -> JSONResponse:
    # The rest of the body is not read: the connection cannot carry another request.
    headers = {"Connection": "close"}
    if error.status == 415:
        headers["Accept-Encoding"] = ", ".join(CODINGS)  # RFC 7694: what the server would take
    return JSONResponse(dialects.error_body(path, error), status_code=error.status, headers=headers)


def _header(scope: Scope, name: bytes) -> bytes:
    return b",".join(v for k, v in scope["headers"] if k == name)


class BodyLimit:
    def __init__(self, app: ASGIApp, ingest_limit: int, other_limit: int,
                 ingest_limit_paths: Iterable[re.Pattern] = ()) -> None:
        """`ingest_limit_paths`: paths beside the dialects' that take the ingest limit."""
        self.app = app
        self.ingest_limit = ingest_limit
        self.other_limit = other_limit
        self.ingest_limit_paths = tuple(ingest_limit_paths)

    def limit_for(self, scope: Scope) -> int:
        # Every dialect's paths are ingest routes; the control plane takes the smaller limit.
        path = scope["path"]
        if dialects.dialect_for(path) or any(pattern.fullmatch(path) for pattern in self.ingest_limit_paths):
            return self.ingest_limit
        return self.other_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > limit:
            await refusal(scope["path"], too_large(limit))(scope, receive, send)
            return
        inflater = None
        has_body = declared not in (b"", b"0") or any(k == b"transfer-encoding" for k, _ in scope["headers"])
        encoding = _header(scope, b"content-encoding")
        if encoding and has_body:
            try:
                coding = coding_of(encoding.decode("latin-1"))
            except ApiError as error:
                await refusal(scope["path"], error)(scope, receive, send)
                return
            if coding is not None:
                inflater = Inflater(coding, limit)
                scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k not in _WIRE_HEADERS]}
        received = 0
        refused: ApiError | None = None
        started = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                received += len(body)
                try:
                    if received > limit:
                        raise too_large(limit)
                    if inflater is not None:
                        message = {**message, "body": inflater.feed(body)}
                        if not message.get("more_body"):
                            inflater.end()
                except ApiError as error:
                    refused = error
                    raise BodyRefused(error.code) from None
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # whatever the app made of the error, the answer is the refusal below
            started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyRefused:
            pass
        except Exception:
            if not refused:
                raise
        if refused and not started:
            await refusal(scope["path"], refused)(scope, receive, send)
