"""The edge's ASGI application: wiring, health and readiness.

The routers it serves: the catalog, read and admin API by resource (producers.api)
and the ingestion dialects (producers.dialects); the HTTP layer in front of them
(limits, fast ingest dispatch, errors) is producers.edge.
"""

from __future__ import annotations

import contextlib
import logging

from fastapi import APIRouter, FastAPI, Request
from fastapi.routing import APIRoute
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

import schemas
from bus import metrics
from bus.backlog_watch import BacklogWatch
from bus.health import health
from catalog.access import DEFAULT_ORG
from catalog.integrations import TOLERANCE_MAX_S
from catalog.service import Catalog
from catalog.view import CatalogView
from catalog.writer import CatalogWriter
from config import Settings
from producers import dialects
from producers.api import (access, admin, datasources, definitions, harbors, ingest_log, integrations, latest, org_sql,
                           places, series, streams, templates)
from producers.edge import error_handlers
from producers.edge.admission import Admission
from producers.edge.auth import undeclared_writes
from producers.edge.fast_ingest import FastIngest, FastRoute, fast_routes
from producers.edge.limits import BodyLimit
from producers.edge.metrics import RequestMetrics, metrics_endpoint
from producers.edge.rate_limit import RateLimiter
from producers.edge.raw_producer import RawProducer
from producers.edge.results_listener import ResultsListener
from producers.edge.shedding import ShedOverload
from producers.edge.webhook_replays import accepted_signatures
from producers.edge.webhook_signature import SeenSignatures
from producers.openapi import document
from warehouse import QueryLimits
from warehouse.backend import Warehouse

log = logging.getLogger(__name__)

DOCS_ASSETS = "/docs-assets"


def bootstrap_admin(catalog: Catalog) -> None:
    """Make sure the default org exists, where the platform-admin key acts.

    The key itself lives only in the settings (producers.edge.auth), so a restart
    grants and revokes nothing; stored platform keys of older versions are retired.
    """
    catalog.ensure_org(DEFAULT_ORG, "default")
    if retired := catalog.retire_stored_platform_keys():
        log.warning("revoked %d platform-admin key(s) stored in the catalog by an older version", retired)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    """The catalog view caught up, then the raw producer, the results listener, the webhook
    signatures accepted so far and (when shedding is on) the backlog view; stopped in reverse."""
    settings, bootstrap, topics = app.state.settings, app.state.bootstrap, app.state.topics
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
    app.state.webhook_signatures = SeenSignatures()
    accepted = accepted_signatures(bootstrap, topics.idempotency, app.state.webhook_signatures,
                                   max(TOLERANCE_MAX_S, settings.webhook_tolerance_s))
    accepted.start()
    if not await run_in_threadpool(accepted.wait_ready, 60):
        raise RuntimeError("the accepted webhook signatures (idempotency topic) were not read within 60 s")
    if settings.admit_backlog_s > 0:  # the view the edge sheds by (producers.edge.shedding)
        app.state.backlog_watch = BacklogWatch(bootstrap, settings.topic_prefix,
                                               (topics.processors_group, topics.sink_groups))
        app.state.backlog_watch.start()
    try:
        yield
    finally:
        if settings.admit_backlog_s > 0:
            app.state.backlog_watch.stop()
        accepted.stop()
        app.state.results.stop()
        app.state.raw_producer.close()
        writer.close()
        view.stop()


def control_plane() -> list[APIRouter]:
    """The catalog, read and admin routers, in the order they are served (and documented)."""
    return [definitions.router, places.router, harbors.router, access.router, datasources.router,
            templates.router]  # seed 001: templates and their revisions


def reads_and_operations() -> list[APIRouter]:
    """The routers served after the ingest routes, in order."""
    return [latest.router,
            series.router,  # history, aggregates, a place's latest
            ingest_log.router, admin.router, org_sql.router,
            streams.router,  # seed 002: streams, the per-key log
            integrations.router]  # seed 001: integrations (mqtt, webhook, http_poll)


def ingest_routes() -> list[APIRoute]:
    """Every dialect's ingest routes: what producers.edge.fast_ingest dispatches."""
    return [route for dialect in dialects.registered() for route in dialect.router.routes]


def create_app(settings: Settings, bootstrap: str, warehouse: Warehouse) -> FastAPI:
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
    app.state.bootstrap = bootstrap
    app.state.platform_key_hash = settings.platform_key_hash  # producers.edge.auth: the platform-admin key
    app.state.topics = schemas.Topics(settings.topic_prefix)
    app.state.warehouse = warehouse
    app.state.rate_limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
    app.openapi = lambda: document(app)  # type: ignore[method-assign]
    for router in [*control_plane(), *(dialect.router for dialect in dialects.registered()), *reads_and_operations()]:
        app.include_router(router)
    # Every control-plane write route declares what it writes; the dialects write data, checked by their targets.
    declaring = [route for router in control_plane() + reads_and_operations() for route in router.routes]
    if missing := undeclared_writes(declaring):
        raise RuntimeError(f"write routes that declare nothing they write (producers.edge.auth's guards): {missing}")
    error_handlers.install(app, QueryLimits.from_settings(settings))
    add_operations(app)
    # Innermost: ingest POSTs skip FastAPI's router and dependency resolution (producers.edge.fast_ingest).
    app.add_middleware(FastIngest, routes=fast_ingest_routes(app))
    app.add_middleware(BodyLimit, ingest_limit=settings.max_body_bytes, other_limit=settings.max_api_body_bytes,
                       ingest_limit_paths=integrations.LARGE_BODY_PATHS)
    # Outside the body limits: a shed request is answered before any of its body is read.
    app.add_middleware(ShedOverload, routes=ingest_routes(), admission=Admission(settings.admit_backlog_s),
                       topic_prefix=settings.topic_prefix)
    app.add_middleware(RequestMetrics)  # added last: outside every other, so it sees their answers too
    return app


def fast_ingest_routes(app: FastAPI) -> tuple[FastRoute, ...]:
    """Every ingest route in its fast form; raises if one has none (it would drop to FastAPI's slower path)."""
    routes = ingest_routes()
    fast = fast_routes(routes, app.openapi()["paths"])
    dispatched = {id(f.route) for f in fast}
    if slow := [f"{','.join(sorted(r.methods))} {r.path}" for r in routes if id(r) not in dispatched]:
        raise RuntimeError(f"ingest routes the fast path cannot dispatch (producers.edge.fast_ingest): {slow}")
    return fast


def add_operations(app: FastAPI) -> None:
    """Liveness, readiness and the Prometheus text format (bus.metrics)."""

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

    # Requests, sinks in embedded mode, loop states, consumer lag.
    app.get("/metrics", include_in_schema=False)(metrics_endpoint)
