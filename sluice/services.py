"""The long-running services, each a foreground process.

`edge` serves HTTP; with the embedded warehouse it also runs the readings sink
in a thread, because chDB's data folder belongs to one process.
`edge-worker` is one more edge process on the same port (`SLUICE_EDGE_WORKERS`),
or on a port of its own (a second edge): it serves the ingest routes itself and
forwards every other request to the `edge` process, the only one holding the
warehouse (producers.edge.forward).
`processor` is the Faust worker. `sink` is the readings sink on its own, for a
ClickHouse server. `integrations` runs the MQTT subscriptions and HTTP polls of
integrations (seed 001).

Each service watches its own loops (bus.watchdog): when one dies or stalls the
service exits with EXIT_UNHEALTHY, and whatever supervises it (`sluice up`,
a container restart policy) starts a fresh one.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import uvicorn

from bus import metrics
from bus.broker_probe import BrokerProbe
from bus.lag import LagCollector
from bus.partition_health import PartitionHealthCollector
from bus.processor_watch import ProcessorWatch
from bus.health import health
from bus.logs import dict_config
from bus.watchdog import EXIT_UNHEALTHY, Watchdog
from catalog.view import CatalogView
from catalog.writer import CatalogWriter
from config import Settings
from integrations.assignment import Assignment
from integrations.durable import DurableProducer
from integrations.metrics import IntegrationsCollector
from integrations.stage import Stage
from integrations.status import StatusReporter
from processors.app import ProcessorWorker, create_app as create_processor_app
from processors.idempotency import IdempotencyStore
from producers.app import create_app as create_edge_app
from producers.edge.forward import ForwardToPrimary, PrimaryProbe
from producers.clickhouse_http.app import with_clickhouse
from producers.edge.listeners import clickhouse_socket, http_socket, primary_socket, primary_socket_path
from producers.edge.protocol import edge_protocol
from schemas import Topics
from schemas.topics import MessageLimits
from sinks.warehouse_sinks import warehouse_sinks
from warehouse import open_warehouse

log = logging.getLogger(__name__)



def watchdog_for(settings: Settings, on_fatal) -> Watchdog:
    """The service's watchdog, with the heartbeat its supervisor watches and the hard-exit grace."""
    heartbeat = Path(settings.heartbeat_path) if settings.heartbeat_path else None
    return Watchdog(health(), on_fatal, heartbeat=heartbeat, exit_grace=settings.exit_grace_s)


def _terminate_self(reasons: dict) -> None:
    # The service's own SIGTERM path: a graceful stop, then the caller sees watchdog.fired.
    os.kill(os.getpid(), signal.SIGTERM)


def run_edge(settings: Settings) -> None:
    """Serve HTTP until SIGINT/SIGTERM; blocks. Exits EXIT_UNHEALTHY if a loop died or stalled."""
    warehouse = open_warehouse(settings)
    warehouse.migrate()
    sinks = warehouse_sinks(settings, settings.kafka_bootstrap, warehouse) if settings.embedded_warehouse else []
    threads = [threading.Thread(target=s.run, name=s.name, daemon=True) for s in sinks]
    for thread in threads:
        thread.start()
    probe = BrokerProbe(settings.kafka_bootstrap, health())  # readiness: not ready while the broker is away
    probe.start()
    processor_watch = ProcessorWatch(settings.kafka_bootstrap, Topics(settings.topic_prefix).processors_group,
                                     settings.topic_prefix, health())
    processor_watch.start()  # readiness: not ready while no processor takes the raw requests
    watchdog = watchdog_for(settings, _terminate_self)
    app = create_edge_app(settings, settings.kafka_bootstrap, warehouse)
    metrics.REGISTRY.register(metrics.SupervisorCollector(settings.state_dir / "run" / "status.json"))
    metrics.REGISTRY.register(LagCollector(settings.kafka_bootstrap, settings.topic_prefix))
    metrics.REGISTRY.register(PartitionHealthCollector(settings.kafka_bootstrap, settings.topic_prefix))
    # uvicorn re-raises SIGTERM after its graceful shutdown; with the default
    # handler that would kill us before the sinks commit and leave their group.
    signal.signal(signal.SIGTERM, lambda *_: None)
    # The other edges' forwarded requests: workers on this port (SLUICE_EDGE_WORKERS), or a second
    # edge on a port of its own (`sluice edge-worker` with another SLUICE_HTTP_PORT).
    sockets = [http_socket(settings), primary_socket(settings)]
    if settings.clickhouse_port:
        sockets.append(clickhouse_socket(settings))
        app = with_clickhouse(app, settings.clickhouse_port)
    watchdog.start()
    try:
        _serve(app, settings, sockets)
    finally:
        watchdog.stop()
        _stop_sinks(sinks, threads, patience=2 if watchdog.fired else 30)
        processor_watch.stop()
        probe.stop()
        warehouse.close()
    if watchdog.fired:
        raise SystemExit(EXIT_UNHEALTHY)


def run_edge_worker(settings: Settings) -> None:
    """Serve the ingest routes on the shared port, forwarding the rest to the primary edge; blocks.

    No warehouse, no sinks: those are the primary's. Exits EXIT_UNHEALTHY if a loop died or stalled.
    """
    probe = BrokerProbe(settings.kafka_bootstrap, health())
    primary = PrimaryProbe(primary_socket_path(settings), health())  # readiness: can forwarded routes be served
    probe.start()
    primary.start()
    watchdog = watchdog_for(settings, _terminate_self)
    app = ForwardToPrimary(create_edge_app(settings, settings.kafka_bootstrap, None),
                           primary_socket_path(settings))
    signal.signal(signal.SIGTERM, lambda *_: None)  # as in run_edge: uvicorn's graceful stop, then return
    watchdog.start()
    try:
        _serve(app, settings, [http_socket(settings)])
    finally:
        watchdog.stop()
        primary.stop()
        probe.stop()
    if watchdog.fired:
        raise SystemExit(EXIT_UNHEALTHY)


def _serve(app, settings: Settings, sockets: list) -> None:
    # Sockets are bound, not listening: uvicorn listens after the app's start-up (producers.edge.listeners).
    config = uvicorn.Config(app, host=settings.http_host, port=settings.http_port, log_level="warning",
                            access_log=False, timeout_graceful_shutdown=10, http=edge_protocol(settings))
    uvicorn.Server(config).run(sockets=sockets)


def _stop_sinks(sinks, threads, patience: float = 30) -> None:
    # Let each sink finish (insert + commit) the batch it holds before the warehouse closes
    # (a stalled one gets `patience` seconds: it is abandoned, its batch replays elsewhere).
    for sink in sinks:
        sink.stop()
    for thread in threads:
        thread.join(timeout=patience)


def run_sink(settings: Settings) -> None:
    """Run the warehouse sinks against a ClickHouse server until SIGINT/SIGTERM; blocks."""
    warehouse = open_warehouse(settings)
    warehouse.migrate()
    metrics.serve(settings.sink_metrics_port, settings.http_host)
    sinks = warehouse_sinks(settings, settings.kafka_bootstrap, warehouse)
    threads = [threading.Thread(target=s.run, name=s.name, daemon=True) for s in sinks]
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    watchdog = watchdog_for(settings, lambda _: stopping.set())
    for thread in threads:
        thread.start()
    watchdog.start()
    try:
        stopping.wait()
    finally:
        watchdog.stop()
        _stop_sinks(sinks, threads, patience=2 if watchdog.fired else 30)
        warehouse.close()
    if watchdog.fired:
        raise SystemExit(EXIT_UNHEALTHY)


def run_processor(settings: Settings, ready_file: Path | None = None) -> None:
    """Run the Faust worker until SIGINT/SIGTERM; blocks."""
    topics = Topics(settings.topic_prefix)
    metrics.serve(settings.processor_metrics_port, settings.http_host)
    view = CatalogView(settings.kafka_bootstrap, topics.catalog)
    seen = IdempotencyStore(settings.kafka_bootstrap, topics.idempotency)
    view.start()
    seen.start()
    if not (view.wait_ready(60) and seen.wait_ready(60)):
        raise SystemExit("the catalog or idempotency view did not catch up within 60 s")
    app = create_processor_app(settings, settings.kafka_bootstrap, view, seen)
    ready = ready_file or settings.state_dir / "run" / "processor.ready"
    # Faust replaces the logging set-up: hand it one with the repeat filter.
    logging_config = dict_config("WARNING", settings.log_repeat_window_s) if settings.log_repeat_window_s else None
    worker = ProcessorWorker(app, ready_file=ready, loglevel="WARNING", quiet=True, logging_config=logging_config)
    watchdog = watchdog_for(settings, _terminate_self)  # Faust stops gracefully on SIGTERM
    watchdog.start()
    try:
        worker.execute_from_commandline()
    finally:
        watchdog.stop()
        seen.stop()
        view.stop()
        if watchdog.fired:
            raise SystemExit(EXIT_UNHEALTHY)


def run_integrations(settings: Settings) -> None:
    """Run the integrations stage (MQTT subscriptions, HTTP polls) until SIGINT/SIGTERM; blocks.
    More instances share the integrations out (integrations.assignment)."""
    topics = Topics(settings.topic_prefix)
    view = CatalogView(settings.kafka_bootstrap, topics.catalog)
    view.start()
    if not view.wait_ready(60):
        raise SystemExit("the catalog view did not catch up within 60 s")
    writer = CatalogWriter(settings.kafka_bootstrap, topics.catalog, view)
    producer = DurableProducer(settings.kafka_bootstrap,
                               max_message_bytes=MessageLimits.for_body(settings.max_body_bytes).raw)
    stage = Stage(
        view, producer,
        lambda released: Assignment(settings.kafka_bootstrap, topics.integrations, topics.integrations_group,
                                    instance_id=settings.instance_id,
                                    session_timeout_ms=settings.integrations_session_timeout_ms,
                                    on_released=released),
        StatusReporter(writer, settings.instance_id or "integrations", settings.integrations_status_interval_s),
        topics.raw, topics.integrations)
    metrics.REGISTRY.register(IntegrationsCollector(stage.running))
    metrics.serve(settings.integrations_metrics_port, settings.http_host)
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    watchdog = watchdog_for(settings, lambda _: stopping.set())
    watchdog.start()
    try:
        stage.run(stopping)
    finally:
        watchdog.stop()
        producer.close()
        writer.close()
        view.stop()
    if watchdog.fired:
        raise SystemExit(EXIT_UNHEALTHY)
