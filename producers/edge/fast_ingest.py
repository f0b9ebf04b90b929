"""The ingest routes' fast dispatch: every dialect's ingest route called without FastAPI's router.

A profile of the edge under small requests put most of each request's time in
FastAPI's route matching (every included router is tried in turn), its request
handler and dependency resolution, not in the route's own work or Kafka. This
middleware, the innermost of the app's (inside `RequestMetrics` and `BodyLimit`,
which therefore apply unchanged), matches a POST against the dialects' ingest
routes only, binds the route's parameters itself (path parameters, the API-key
dependency called directly, the few query parameters) and awaits the very
endpoint FastAPI would have called. The routes stay declared on their routers, so
OpenAPI documents them as before, and the endpoint is the one code path.

A request the fast path cannot bind exactly as FastAPI would (a query parameter
that does not validate) is passed on to FastAPI untouched, before its body is
read, so FastAPI answers it in its own words. A route with a parameter kind this
module does not bind (header, cookie or body parameters; a dependency that needs
more than the request) cannot be dispatched here: the edge refuses to start with
such an ingest route (producers.app), and tests/test_fast_ingest.py sends a
corpus of requests of every dialect through both paths and compares the answers
byte for byte, so the two cannot drift apart unnoticed.

A 401 or 404 raised before the body is read is a catalog lookup that missed (the
key, the thing, the harbor, ...). With several edge workers the catalog write may
have been made a moment ago through another worker; before such an answer the
worker catches its view up with the catalog topic's end (one broker query at a
time, shared by every miss waiting) and asks the endpoint once more.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from catalog.errors import CatalogError
from producers.edge.errors import ApiError, from_catalog

CATCH_UP_S = 2.0  # the longest a catalog miss waits for the view (the broker away: that long, then the miss)


@dataclass(frozen=True)
class FastRoute:
    route: APIRoute  # scope["route"]: what the request metrics label by
    regex: re.Pattern
    endpoint: Callable[..., Any]
    request_name: str  # the endpoint's Request parameter
    dependencies: tuple[tuple[str, Callable[[Request], Any]], ...]  # parameter name → call(request)
    query: tuple[Any, ...]  # FastAPI's ModelFields of the query parameters
    defaults: dict[str, Any]  # query parameters' values when absent

    def bind_query(self, query_string: bytes) -> dict[str, Any] | None:
        """The query parameters' values, or None when one does not validate (FastAPI answers that)."""
        if not query_string:
            return self.defaults
        received = QueryParams(query_string)
        values = dict(self.defaults)
        for field in self.query:
            if field.alias in received:
                value, errors = field.validate(received[field.alias], values, loc=("query", field.alias))
                if errors:
                    return None
                values[field.name] = value
        return values


def fast_route(route: APIRoute) -> FastRoute | None:
    """The fast form of `route`, or None when it declares what this module does not bind."""
    dependant = route.dependant
    if (dependant.header_params or dependant.cookie_params or dependant.body_params or not dependant.request_param_name
            or dependant.response_param_name or dependant.background_tasks_param_name
            or not inspect.iscoroutinefunction(route.endpoint)):
        return None
    dependencies = []
    for sub in dependant.dependencies:
        # Only request-only async dependencies (the API key): called directly, no resolution step.
        if (sub.dependencies or sub.path_params or sub.query_params or sub.header_params or sub.cookie_params
                or sub.body_params or not sub.request_param_name or not inspect.iscoroutinefunction(sub.call)):
            return None
        dependencies.append((sub.name, sub.call))
    if any(q.field_info.is_required() for q in dependant.query_params):
        return None
    defaults = {q.name: q.default for q in dependant.query_params}
    return FastRoute(route, route.path_regex, route.endpoint, dependant.request_param_name, tuple(dependencies),
                     tuple(dependant.query_params), defaults)


def fast_routes(routes: list[APIRoute], documented: dict[str, dict]) -> tuple[FastRoute, ...]:
    """The fast forms of the POST `routes` that no other documented POST route overlaps.

    `documented` is the OpenAPI `paths`: a route whose path another POST path also
    matches is left to FastAPI's router, whose order decides between them.
    """
    post_paths = [compile_path(path)[0] for path, methods in documented.items() if "post" in methods]
    chosen = []
    for route in routes:
        if "POST" not in route.methods:
            continue
        sample = re.sub(r"{[^}]+}", "x", route.path)
        overlaps = sum(1 for regex in post_paths if regex.match(sample))
        fast = fast_route(route) if overlaps <= 1 else None
        if fast is not None:
            chosen.append(fast)
    return tuple(chosen)


class FastIngest:
    """ASGI middleware: ingest POSTs to their endpoints directly, everything else on to `app`."""

    def __init__(self, app: ASGIApp, routes: tuple[FastRoute, ...]) -> None:
        self.app = app
        self._routes = routes
        self._catching_up: tuple[float, asyncio.Future] | None = None  # (started at, catch-up's outcome)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        for fast in self._routes:
            match = fast.regex.match(path)
            if match is None:
                continue
            query = fast.bind_query(scope["query_string"])
            if query is None:
                break  # FastAPI answers the invalid parameter
            scope["route"] = fast.route
            scope["path_params"] = params = match.groupdict()
            await self._dispatch(fast, params, query, scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _dispatch(self, fast: FastRoute, params: dict, query: dict, scope: Scope, receive: Receive,
                        send: Send) -> None:
        body_read = False

        async def marked_receive() -> Message:
            nonlocal body_read
            body_read = True
            return await receive()

        request = Request(scope, marked_receive, send)
        try:
            try:
                response = await self._call(fast, params, query, request)
            except (ApiError, CatalogError) as exc:
                if _status(exc) not in (401, 404) or body_read or not await self._caught_up(scope["app"]):
                    raise
                response = await self._call(fast, params, query, request)
        except Exception as exc:
            handler = _handler_for(scope["app"].exception_handlers, exc)
            if handler is None:
                raise  # the server's 500, as on FastAPI's path
            response = await handler(request, exc)
        await response(scope, receive, send)

    @staticmethod
    async def _call(fast: FastRoute, params: dict, query: dict, request: Request) -> Any:
        kwargs = {**params, **query, fast.request_name: request}
        for name, call in fast.dependencies:
            kwargs[name] = await call(request)
        return await fast.endpoint(**kwargs)

    async def _caught_up(self, app: Any) -> bool:
        """Whether the catalog view has applied everything the topic held after this miss; waits.

        A catch-up started before the miss may not cover a write the client saw answered just
        before it, so only one started later counts; misses meanwhile share it.
        """
        missed_at = time.monotonic()
        while True:
            job = self._catching_up
            if job is not None and job[0] >= missed_at:
                return await asyncio.shield(job[1])
            if job is not None and not job[1].done():
                await asyncio.shield(job[1])  # an older one: let it finish, then start a fresh one
                continue
            future = asyncio.ensure_future(run_in_threadpool(app.state.catalog.view.catch_up_to_end, CATCH_UP_S))
            self._catching_up = (time.monotonic(), future)


def _handler_for(handlers: dict, exc: Exception) -> Callable | None:
    # Starlette's rule: the handler of the nearest class in the exception's MRO.
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None


def _status(error: ApiError | CatalogError) -> int:
    return error.status if isinstance(error, ApiError) else from_catalog(error).status
