"""An analyst query's answer over HTTP, bounded and abandoned with its client.

The engine's chunks are fetched in a worker thread while the request's client is
watched (`Watched`): when the client goes away, the query is stopped in the
engine (QueryStream.cancel, a KILL QUERY) instead of running on for nobody. The
answer is either streamed as the engine writes it (`Streamed`), or, for the
`rows` format, built whole as one JSON document of at most a given size
(`rows_document`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from producers.edge.errors import ApiError
from warehouse import QueryStream
from warehouse.backend import lines

log = logging.getLogger(__name__)


class Watched:
    """A QueryStream read for one request, its client watched meanwhile.

    next() raises ClientDisconnect once the client has gone (after stopping the
    query), WarehouseError when the engine fails. Call aclose() when done.
    """

    def __init__(self, request: Request, stream: QueryStream):
        self._stream = stream
        self._receive = request.receive
        self._gone = asyncio.Event()
        self._watch = asyncio.ensure_future(self._watch_client())

    async def _watch_client(self) -> None:
        # The body has been read: what the server hands the app now is the disconnect.
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self._gone.set()

    async def next(self) -> bytes:
        """The next chunk, b"" at the end."""
        fetch = asyncio.ensure_future(run_in_threadpool(next, self._stream, b""))
        gone = asyncio.ensure_future(self._gone.wait())
        await asyncio.wait({fetch, gone}, return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if not fetch.done():
            # The client went away while the engine worked: stop the query, then let the
            # fetch (which fails once the engine notices) end before the stream is closed.
            with contextlib.suppress(Exception):
                await run_in_threadpool(self._stream.cancel)
            with contextlib.suppress(Exception):
                await fetch
            raise ClientDisconnect()
        return fetch.result()

    async def aclose(self) -> None:
        self._watch.cancel()
        await run_in_threadpool(self._stream.close)


class Streamed(Response):
    """A 200 sending `first` and then the rest of `source` as it comes (no Content-Length).

    A failure after the first chunk can no longer change the status: the body then
    ends with the error (`error_of` makes the ApiError from the exception; by default
    one line `{"error": {...}}`, else what `error_text` makes of it) and the connection
    is closed without the body's end, so no client takes the cut result for a whole one.
    """

    def __init__(self, source: Watched, first: bytes, media_type: str,
                 error_of: Callable[[Exception], ApiError], headers: dict[str, str] | None = None,
                 error_text: Callable[[ApiError], bytes] | None = None):
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers(headers)  # no body: no Content-Length
        self.source = source
        self.first = first
        self.error_of = error_of
        self.error_text = error_text or (lambda error: json.dumps(error.body()).encode() + b"\n")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sent, ended_line = 0, True
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            chunk = self.first
            while chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sent, ended_line = sent + len(chunk), chunk.endswith(b"\n")
                chunk = await self.source.next()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except ClientDisconnect:
            log.info("admin SQL: the client went away after %d bytes; the query was stopped", sent)
        except Exception as exc:  # the engine failed mid-stream
            error = self.error_of(exc)
            log.warning("admin SQL cut short after %d bytes: %s", sent, error.message)
            line = (b"" if ended_line else b"\n") + self.error_text(error)
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": line, "more_body": True})
            # Returning without the last body message makes the server close the connection.
        finally:
            await self.source.aclose()


def rows_document(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """`{"columns": [...], "rows": [[...], ...]}` in pieces, from the chunks of a
    JSONCompactEachRowWithNames output (the names line first, then a JSON array per
    row; chunks may split lines anywhere). Pure."""
    rows = lines(chunks)
    names = next(rows, None)
    yield b'{"columns": ' + (names or b"[]") + b', "rows": ['
    separator = b""
    for line in rows:
        yield separator + line
        separator = b", "
    yield b"]}"

