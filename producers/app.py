"""The edge's ASGI application: wiring, error shape, health and readiness."""

from __future__ import annotations

import contextlib
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.responses import Response

import schemas
from bus import metrics
from bus.health import health
from catalog.access import DEFAULT_ORG
from catalog.errors import SluiceError
from catalog.service import Catalog
from catalog.view import CatalogView
from catalog.writer import CatalogWriter
from config import Settings
from producers import (access_routes, admin_routes, datasource_routes, definitions_routes, dialects,
                       harbor_routes, ingest_log_routes, integration_routes, read_routes, registry_routes,
                       series_routes, streams_routes, templates_routes)
from producers.auth import undeclared_writes
from producers.fast_ingest import FastIngest, fast_routes
from producers.limits import BodyLimit
from producers.metrics import RequestMetrics, metrics_endpoint
from producers.openapi import allowed_methods, document
from producers.rate_limit import RateLimiter
from producers.raw_producer import RawProducer
from producers.results_listener import ResultsListener
from warehouse import QueryLimits, WarehouseError
from warehouse.backend import Warehouse

log = logging.getLogger(__name__)

DOCS_ASSETS = "/docs-assets"


def bootstrap_admin(catalog: Catalog) -> None:
    """Make sure the default org exists, where the platform-admin key acts.

    The key itself lives only in the settings (producers.auth), so a restart
    grants and revokes nothing; stored platform keys of older versions are retired.
    """
    catalog.ensure_org(DEFAULT_ORG, "default")
    if retired := catalog.retire_stored_platform_keys():
        log.warning("revoked %d platform-admin key(s) stored in the catalog by an older version", retired)


def create_app(settings: Settings, bootstrap: str, warehouse: Warehouse) -> FastAPI:
    topics = schemas.Topics(settings.topic_prefix)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        view = CatalogView(bootstrap, topics.catalog)
        view.start()
        if not await run_in_threadpool(view.wait_ready, 60):
            raise RuntimeError("the catalog view did not catch up within 60 s")
        writer = CatalogWriter(bootstrap, topics.catalog, view)
        app.state.catalog = Catalog(view, writer)
        await run_in_threadpool(bootstrap_admin, app.state.catalog)
        app.state.raw_producer = RawProducer(
            bootstrap, max_message_bytes=schemas.topics.MessageLimits.for_body(settings.max_body_bytes).raw)
        metrics.PRODUCE_QUEUE.set_function(app.state.raw_producer.queued)
        app.state.results = ResultsListener(bootstrap, topics.results)
        await run_in_threadpool(app.state.results.start)
        try:
            yield
        finally:
            app.state.results.stop()
            app.state.raw_producer.close()
            writer.close()
            view.stop()

    # /docs and /redoc load Swagger UI's and ReDoc's JS and CSS from this package (under DOCS_ASSETS),
    # not a CDN: they work on a network without the internet.
    app = FastAPIOffline(
        title="Sluice",
        version="0.1.0",
        description="Telemetry ingestion: HTTP edge → Kafka → processors → ClickHouse.",
        lifespan=lifespan,
        static_url=DOCS_ASSETS,
        # Swagger UI's validator badge would be fetched from validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None},
        # Sluice exports Prometheus metrics, not OpenTelemetry; left on, FastAPI asks the
        # (unconfigured) OpenTelemetry providers on every request (~5 % of a small ingest's time).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.platform_key_hash = settings.platform_key_hash  # producers.auth: the platform-admin key
    app.state.topics = topics
    app.state.warehouse = warehouse
    app.state.rate_limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
    # Innermost: ingest POSTs skip FastAPI's router and dependency resolution (producers.fast_ingest).
    app.add_middleware(FastIngest, routes=lambda: fast_routes(
        [route for dialect in dialects.registered() for route in dialect.router.routes], app.openapi()["paths"]))
    app.add_middleware(BodyLimit, ingest_limit=settings.max_body_bytes, other_limit=settings.max_api_body_bytes)
    app.add_middleware(RequestMetrics)  # added last: outside every other, so it sees their answers too
    app.openapi = lambda: document(app)  # type: ignore[method-assign]
    ingest = [dialect.router for dialect in dialects.registered()]
    routers = [definitions_routes.router, registry_routes.router, harbor_routes.router, access_routes.router,
               datasource_routes.router,
               templates_routes.router,  # seed 001: templates and their revisions
               *ingest,
               read_routes.router,
               series_routes.router,  # history, aggregates, a place's latest
               ingest_log_routes.router, admin_routes.router,
               streams_routes.router,  # seed 002: streams, the per-key log
               integration_routes.router]  # seed 001: integrations (mqtt, webhook, http_poll)
    for router in routers:
        app.include_router(router)
    # Every control-plane write route declares what it writes; the dialects write data, checked by their targets.
    if missing := undeclared_writes(route for router in routers if router not in ingest for route in router.routes):
        raise RuntimeError(f"write routes that declare nothing they write (producers.auth's guards): {missing}")

    @app.exception_handler(SluiceError)
    async def sluice_error(request: Request, exc: SluiceError) -> JSONResponse:
        headers = {}
        if "retry_after" in exc.details:
            headers["Retry-After"] = str(exc.details["retry_after"])
        return JSONResponse(dialects.error_body(request.url.path, exc), status_code=exc.status, headers=headers)

    read_limits = QueryLimits.from_settings(settings)

    @app.exception_handler(WarehouseError)
    async def warehouse_failed(request: Request, exc: WarehouseError) -> JSONResponse:
        # A read of the API that ran into its bounds (deadline, memory): the warehouse cannot
        # answer it now. Anything else the warehouse raises stays a plain 500.
        bound = read_limits.exceeded(exc.code, str(exc))
        if bound is None:
            raise exc
        setting, words = bound
        error = SluiceError(503, "UNAVAILABLE", f"the warehouse could not answer: {words} ({setting})",
                            setting=setting, retry_after=1)
        return JSONResponse(dialects.error_body(request.url.path, error), status_code=503,
                            headers={"Retry-After": "1"})

    @app.exception_handler(StarletteHTTPException)
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
        error = SluiceError(exc.status_code, codes.get(exc.status_code, "HTTP_ERROR"), str(exc.detail))
        return JSONResponse(dialects.error_body(request.url.path, error), status_code=exc.status_code,
                            headers=headers)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
        # Routine on flaky links: one line, no traceback. Nobody reads the answer.
        client = request.client.host if request.client else "?"
        log.info("client %s disconnected during %s %s", client, request.method, request.url.path)
        return Response(status_code=499)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e["loc"] if p != "body"), "reason": e["msg"]}
            for e in exc.errors()
        ]
        first = problems[0] if problems else {"field": None, "reason": "invalid request"}
        error = SluiceError(400, "INVALID_PAYLOAD", f"{first['field']}: {first['reason']}",
                            field=first["field"], problems=problems)
        return JSONResponse(dialects.error_body(request.url.path, error), status_code=400)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], responses={
        503: {"description": "the catalog view has not caught up yet", "content": {"application/json": {
            "schema": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}}}})
    async def readyz(request: Request) -> JSONResponse:
        """200 when the catalog view has caught up and every loop of this process is ok
        (broker reachable, sinks and tails running); else 503 naming what is not."""
        catalog = getattr(request.app.state, "catalog", None)
        loops_ok, components = health().ready()
        ready = catalog is not None and catalog.view.ready and loops_ok
        return JSONResponse({"ready": ready, "components": components}, status_code=200 if ready else 503)

    # The Prometheus text format (bus.metrics): requests, sinks in embedded mode, loop states, consumer lag.
    app.get("/metrics", include_in_schema=False)(metrics_endpoint)
    return app

