"""Request body limits, one per route class, enforced in one place.

An ASGI middleware in front of every route: a declared Content-Length over the
limit is refused before the app runs; otherwise the body is counted while it
streams in, and the request is refused at the first byte over the limit (it is
never buffered whole). Ingest routes take `SLUICE_MAX_BODY_BYTES`; every other
route (catalog, keys, admin) the smaller `SLUICE_MAX_API_BODY_BYTES`.
"""

from __future__ import annotations


from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from catalog.errors import SluiceError
from producers import dialects



class BodyTooLarge(Exception):
    """Raised into the app by `receive` when the body passes its limit."""


def too_large(path: str, limit: int) -> JSONResponse:
    error = SluiceError(413, "PAYLOAD_TOO_LARGE", f"request body exceeds {limit} bytes", limit=limit)
    # The rest of the body is not read: the connection cannot carry another request.
    return JSONResponse(dialects.error_body(path, error), status_code=413, headers={"Connection": "close"})


class BodyLimit:
    def __init__(self, app: ASGIApp, ingest_limit: int, other_limit: int) -> None:
        self.app = app
        self.ingest_limit = ingest_limit
        self.other_limit = other_limit

    def limit_for(self, scope: Scope) -> int:
        # Every dialect's paths are ingest routes; the control plane takes the smaller limit.
        return self.ingest_limit if dialects.dialect_for(scope["path"]) else self.other_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), b"")
        if declared.isdigit() and int(declared) > limit:
            await too_large(scope["path"], limit)(scope, receive, send)
            return
        received = 0
        over = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise BodyTooLarge(limit)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over:
                return  # whatever the app made of the error, the answer is the 413 below
            started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            pass
        except Exception:
            if not over:
                raise
        if over and not started:
            await too_large(scope["path"], limit)(scope, receive, send)
