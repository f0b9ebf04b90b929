"""The edge's ASGI application: wiring, error shape, health and readiness."""

from __future__ import annotations

import contextlib
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.concurrency import run_in_threadpool

import schemas
from bus.health import health
from catalog.models import ApiKeyIn
from catalog.errors import SluiceError
from catalog.service import Catalog
from catalog.view import CatalogView
from catalog.writer import CatalogWriter
from config import Settings
from producers import (access_routes, admin_routes, definitions_routes, ingest_log_routes, ingest_routes,
                       read_routes, registry_routes)
from producers.rate_limit import RateLimiter
from producers.raw_producer import RawProducer
from producers.results_listener import ResultsListener
from warehouse.backend import Warehouse

log = logging.getLogger(__name__)

DEFAULT_ORG = "org_default"


def bootstrap_admin(catalog: Catalog, secret: str) -> None:
    """Make sure the default org and the platform-admin key for `secret` exist."""
    catalog.ensure_org(DEFAULT_ORG, "default")
    if catalog.authenticate(secret) is None:
        catalog.create_api_key(DEFAULT_ORG, ApiKeyIn(name="platform admin", scopes=["admin", "write", "read"]),
                               secret=secret, platform_admin=True)


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
        if settings.admin_key:
            await run_in_threadpool(bootstrap_admin, app.state.catalog, settings.admin_key)
        app.state.raw_producer = RawProducer(bootstrap)
        app.state.results = ResultsListener(bootstrap, topics.results)
        await run_in_threadpool(app.state.results.start)
        try:
            yield
        finally:
            app.state.results.stop()
            app.state.raw_producer.close()
            writer.close()
            view.stop()

    app = FastAPI(
        title="Sluice",
        version="0.1.0",
        description="Telemetry ingestion: HTTP edge → Kafka → processors → ClickHouse.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.topics = topics
    app.state.warehouse = warehouse
    app.state.rate_limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
    app.include_router(definitions_routes.router)
    app.include_router(registry_routes.router)
    app.include_router(access_routes.router)
    app.include_router(ingest_routes.router)
    app.include_router(read_routes.router)
    app.include_router(ingest_log_routes.router)
    app.include_router(admin_routes.router)

    @app.exception_handler(SluiceError)
    async def sluice_error(request: Request, exc: SluiceError) -> JSONResponse:
        headers = {}
        if "retry_after" in exc.details:
            headers["Retry-After"] = str(exc.details["retry_after"])
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown routes and methods answer in the one error shape too.
        codes = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}
        error = SluiceError(exc.status_code, codes.get(exc.status_code, "HTTP_ERROR"), str(exc.detail))
        return JSONResponse(error.body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e["loc"] if p != "body"), "reason": e["msg"]}
            for e in exc.errors()
        ]
        first = problems[0] if problems else {"field": None, "reason": "invalid request"}
        error = SluiceError(400, "INVALID_PAYLOAD", f"{first['field']}: {first['reason']}",
                            field=first["field"], problems=problems)
        return JSONResponse(error.body(), status_code=400)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz(request: Request) -> JSONResponse:
        """200 when the catalog view has caught up and every loop of this process is ok
        (broker reachable, sinks and tails running); else 503 naming what is not."""
        catalog = getattr(request.app.state, "catalog", None)
        loops_ok, components = health().ready()
        ready = catalog is not None and catalog.view.ready and loops_ok
        return JSONResponse({"ready": ready, "components": components}, status_code=200 if ready else 503)

    return app
