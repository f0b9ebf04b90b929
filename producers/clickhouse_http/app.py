"""The ClickHouse-compatible HTTP interface: the edge's analyst SQL for ClickHouse's clients.

Served by the edge process that holds the warehouse, on a port of its own
(SLUICE_CLICKHOUSE_PORT; `with_clickhouse` sends that port's requests here). `GET /ping`
answers `Ok.`; `GET`/`POST /` runs one read-only query (producers.clickhouse_http.wire
says where it and its format come from). The password is a Sluice key: an org's read key
runs its org's SQL exactly as `POST /v2/sql` does, the platform-admin key the admin's, on
the same analyst slots and bounds (Warehouse.readonly_stream). Streamed formats are sent
as the engine writes them; a whole-document format (JSON, Parquet, Arrow) is refused
past SLUICE_SQL_ROWS_MAX_BYTES, like the admin route's `rows`.
"""

from __future__ import annotations

import json
import time
import uuid

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from catalog import keys
from config import Settings
from producers.api.sql_answers import Streamed, Watched
from producers.clickhouse_http.wire import (
    ClickHouseError,
    answered_probe,
    credentials,
    query_text,
    split_format,
    status_of,
)
from producers.edge.auth import Principal, holder, require_sql_reader
from producers.edge.errors import ApiError
from warehouse import WarehouseBusy, WarehouseError, formats
from warehouse.errors import ReadOnlyError

#: Request parameters that are not settings.
_PARAMS = frozenset({"query", "database", "default_format", "user", "password", "query_id", "session_id",
                     "compress", "client_protocol_version"})


def with_clickhouse(edge: Starlette, port: int) -> ASGIApp:
    """`edge`, but with the requests reaching local port `port` answered by the interface."""
    interface = create_app(edge)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server") or (None, None)
        if scope["type"] == "http" and len(server) > 1 and server[1] == port:
            await interface(scope, receive, send)
        else:
            await edge(scope, receive, send)
    return app


def create_app(edge: Starlette) -> Starlette:
    """The interface over `edge`'s warehouse, catalog and settings (its state, read per request)."""

    async def ping(request: Request) -> Response:
        return PlainTextResponse("Ok.\n")

    async def query(request: Request) -> Response:
        try:
            return await _answer(request, edge.state)
        except ClickHouseError as exc:
            return _refusal(exc)

    return Starlette(routes=[Route("/ping", ping, methods=["GET", "HEAD"]),
                             Route("/", query, methods=["GET", "POST"])])


async def _answer(request: Request, state: object) -> Response:
    settings: Settings = state.settings  # type: ignore[attr-defined]
    started = time.monotonic_ns()
    params = request.query_params
    org_id = _caller(request, state)
    body = await _body(request, settings.max_api_body_bytes)
    sql, named = split_format(query_text(params.get("query"), body))
    try:
        fmt = formats.canonical(named or params.get("default_format") or request.headers.get("x-clickhouse-format")
                                or "TabSeparated")
    except ValueError as exc:
        raise ClickHouseError("UNKNOWN_FORMAT", str(exc)) from None
    if params.get("compress", "0") not in ("", "0", "false"):
        # ClickHouse's own compressed framing of the answer: not served (HTTP's Content-Encoding neither).
        raise ClickHouseError("BAD_ARGUMENTS", "compress=1 (ClickHouse's compressed answers) is not served: "
                              "turn the client's compression off (the JDBC driver: compress=false in its URL)")
    if fmt == "Native" and params.get("client_protocol_version", "0") not in ("", "0"):
        # clickhouse-go asks for it over HTTP; the engine writes Native at revision 0 alone.
        raise ClickHouseError("BAD_ARGUMENTS", f"Native at client_protocol_version "
                              f"{params['client_protocol_version']} is not served: only revision 0 is")
    database = params.get("database") or request.headers.get("x-clickhouse-database") or "default"
    if database not in ("", "default", settings.database):
        raise ClickHouseError("UNKNOWN_DATABASE", f"Database {database} does not exist: Sluice's "
                              f"tables are in {settings.database}")
    asked = {name: value for name, value in params.items() if name not in _PARAMS}
    try:
        stream = await run_in_threadpool(state.warehouse.readonly_stream,  # type: ignore[attr-defined]
                                         answered_probe(sql), fmt, org_id, asked)
    except Exception as exc:
        raise _refused(exc, settings) from None
    source = Watched(request, stream)
    try:
        first = await source.next()
        if formats.is_whole(fmt) and len(first) > settings.sql_rows_max_bytes:
            raise ClickHouseError("TOO_MANY_ROWS_OR_BYTES", (
                f"the answer passes {settings.sql_rows_max_bytes} bytes, the most a {fmt} answer (one document, "
                "built whole) holds (SLUICE_SQL_ROWS_MAX_BYTES): add a LIMIT, or ask for a streamed format "
                "(Native, TabSeparated, CSV, JSONEachRow)"))
    except Exception as exc:
        await source.aclose()
        raise _refused(exc, settings) from None
    summary = {"read_rows": "0", "read_bytes": "0", "written_rows": "0", "written_bytes": "0",
               "total_rows_to_read": "0", "result_rows": "0", "result_bytes": str(len(first)),
               "elapsed_ns": str(time.monotonic_ns() - started)}
    headers = {"X-ClickHouse-Format": fmt, "X-ClickHouse-Timezone": "UTC",
               "X-ClickHouse-Query-Id": params.get("query_id") or str(uuid.uuid4()),
               "X-ClickHouse-Summary": json.dumps(summary, separators=(",", ":"))}
    return Streamed(source, first, _media_type(fmt), lambda exc: _as_api_error(_refused(exc, settings)),
                    headers=headers, error_text=lambda error: error.message.encode())


def _caller(request: Request, state: object) -> str | None:
    """The org whose rows the request reads (None: all, the platform-admin key), or a refusal."""
    user, password = credentials(request.headers, request.query_params)
    if not password:
        raise ClickHouseError("AUTHENTICATION_FAILED", f"{user}: Authentication failed: the password is a Sluice "
                              "API key (an org's read key, or the platform-admin key), and none was given")
    try:
        who: Principal = holder(state, password)
    except ApiError:
        raise ClickHouseError("AUTHENTICATION_FAILED", f"{user}: Authentication failed: the password is not a "
                              "valid Sluice API key, or the key was revoked") from None
    if keys.PLATFORM_ADMIN in who.key.get("scopes", ()):
        return None
    try:
        require_sql_reader(who)
    except ApiError as exc:
        raise ClickHouseError("ACCESS_DENIED", f"{user}: Not enough privileges: {exc.message}") from None
    return who.org_id


async def _body(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ClickHouseError("BAD_ARGUMENTS", f"the query passes {limit} bytes (SLUICE_MAX_API_BODY_BYTES)")
        chunks.append(chunk)
    return b"".join(chunks)


def _refused(exc: Exception, settings: Settings) -> ClickHouseError:
    """The ClickHouseError answering a query the warehouse refused or failed."""
    if isinstance(exc, ClickHouseError):
        return exc
    if isinstance(exc, WarehouseBusy):
        return ClickHouseError("TOO_MANY_SIMULTANEOUS_QUERIES", f"{exc} (SLUICE_SQL_CONCURRENCY is "
                               f"{settings.sql_concurrency})")
    if isinstance(exc, ReadOnlyError):
        return ClickHouseError("READONLY", f"Cannot execute query in readonly mode: {exc}")
    if isinstance(exc, WarehouseError):
        return ClickHouseError("", str(exc), exc.code or 0)
    raise exc  # not a refusal (the client went away, a bug): the server's to handle


def _as_api_error(error: ClickHouseError) -> ApiError:
    # Streamed cuts a stream short with the text an ApiError carries: here, ClickHouse's own.
    return ApiError(status_of(error.code), error.name or "ENGINE_ERROR", error.text().decode())


def _refusal(error: ClickHouseError) -> Response:
    headers = {"X-ClickHouse-Exception-Code": str(error.code)}
    if error.code == 202:
        headers["Retry-After"] = "1"
    return Response(error.text(), status_code=error.status, headers=headers, media_type="text/plain; charset=UTF-8")


def _media_type(fmt: str) -> str:
    if fmt.startswith(("TabSeparated", "TSV")):
        return "text/tab-separated-values; charset=UTF-8"
    if fmt.startswith("CSV"):
        return "text/csv; charset=UTF-8"
    if fmt.startswith("JSON"):
        return "application/json; charset=UTF-8"
    if fmt.startswith("Pretty"):
        return "text/plain; charset=UTF-8"
    return "application/octet-stream"
