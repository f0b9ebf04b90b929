"""How the edge answers what went wrong: every error in the one shape, in the route's dialect.

The catalog's refusals (catalog.errors) take the status of their kind; a read that ran
into the warehouse's bounds is a 503; unknown routes and methods, FastAPI's
validation errors and a client that went away are answered here too.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from catalog.errors import CatalogError
from producers import dialects
from producers.edge.errors import ApiError, from_catalog
from producers.openapi import allowed_methods
from warehouse import QueryLimits, WarehouseError

log = logging.getLogger(__name__)


def answer(request: Request, error: ApiError, headers: dict | None = None) -> JSONResponse:
    """`error` as the client of the request's path expects it."""
    return JSONResponse(dialects.error_body(request.url.path, error), status_code=error.status, headers=headers)


async def api_error(request: Request, exc: ApiError) -> JSONResponse:
    headers = {}
    if "retry_after" in exc.details:
        headers["Retry-After"] = str(exc.details["retry_after"])
    return answer(request, exc, headers)


async def catalog_error(request: Request, exc: CatalogError) -> JSONResponse:
    return await api_error(request, from_catalog(exc))


async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
    # Routine on flaky links: one line, no traceback. Nobody reads the answer.
    client = request.client.host if request.client else "?"
    log.info("client %s disconnected during %s %s", client, request.method, request.url.path)
    return Response(status_code=499)


async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    if isinstance(exc.__cause__, ClientDisconnect):  # FastAPI's "error parsing the body"
        return await client_gone(request, exc.__cause__)
    # Unknown routes and methods answer in the one error shape too.
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # Starlette names only the first route of the path; a path's methods span several routes.
        headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=headers)
    codes = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}
    return answer(request, ApiError(exc.status_code, codes.get(exc.status_code, "HTTP_ERROR"), str(exc.detail)),
                  headers)


async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = [
        {"field": ".".join(str(p) for p in e["loc"] if p != "body"), "reason": e["msg"]}
        for e in exc.errors()
    ]
    first = problems[0] if problems else {"field": None, "reason": "invalid request"}
    return answer(request, ApiError(400, "INVALID_PAYLOAD", f"{first['field']}: {first['reason']}",
                                    field=first["field"], problems=problems))


def warehouse_bounds(read_limits: QueryLimits):
    """The handler of a read of the API that ran into its bounds (deadline, memory): the
    warehouse cannot answer it now. Anything else the warehouse raises stays a plain 500."""

    async def warehouse_failed(request: Request, exc: WarehouseError) -> JSONResponse:
        bound = read_limits.exceeded(exc.code, str(exc))
        if bound is None:
            raise exc
        setting, words = bound
        error = ApiError(503, "UNAVAILABLE", f"the warehouse could not answer: {words} ({setting})",
                         setting=setting, retry_after=1)
        return answer(request, error, {"Retry-After": "1"})

    return warehouse_failed


def install(app: FastAPI, read_limits: QueryLimits) -> None:
    """Every error handler of the edge on `app`."""
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(CatalogError, catalog_error)
    app.add_exception_handler(WarehouseError, warehouse_bounds(read_limits))
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(ClientDisconnect, client_gone)
    app.add_exception_handler(RequestValidationError, invalid_body)
