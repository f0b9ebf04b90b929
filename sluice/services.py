"""The three long-running services, each a foreground process.

`edge` serves HTTP; with the embedded warehouse it also runs the readings sink
in a thread, because chDB's data folder belongs to one process.
`processor` is the Faust worker. `sink` is the readings sink on its own, for a
ClickHouse server.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import uvicorn

from catalog.view import CatalogView
from config import Settings
from processors.app import ProcessorWorker, create_app as create_processor_app
from processors.idempotency import IdempotencyStore
from producers.app import create_app as create_edge_app
from producers.http_protocol import edge_protocol
from schemas import Topics
from sinks.registry import warehouse_sinks
from warehouse import open_warehouse

log = logging.getLogger(__name__)


def run_edge(settings: Settings) -> None:
    """Serve HTTP until SIGINT/SIGTERM; blocks."""
    warehouse = open_warehouse(settings)
    warehouse.migrate()
    sinks = warehouse_sinks(settings, settings.kafka_bootstrap, warehouse) if settings.embedded_warehouse else []
    threads = [threading.Thread(target=s.run, name=s.name, daemon=True) for s in sinks]
    for thread in threads:
        thread.start()
    app = create_edge_app(settings, settings.kafka_bootstrap, warehouse)
    # uvicorn re-raises SIGTERM after its graceful shutdown; with the default
    # handler that would kill us before the sinks commit and leave their group.
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_level="warning",
                    access_log=False, timeout_graceful_shutdown=10, http=edge_protocol(settings))
    finally:
        _stop_sinks(sinks, threads)
        warehouse.close()


def _stop_sinks(sinks, threads) -> None:
    # Let each sink finish (insert + commit) the batch it holds before the warehouse closes.
    for sink in sinks:
        sink.stop()
    for thread in threads:
        thread.join(timeout=30)


def run_sink(settings: Settings) -> None:
    """Run the warehouse sinks against a ClickHouse server until SIGINT/SIGTERM; blocks."""
    warehouse = open_warehouse(settings)
    warehouse.migrate()
    sinks = warehouse_sinks(settings, settings.kafka_bootstrap, warehouse)
    threads = [threading.Thread(target=s.run, name=s.name) for s in sinks]
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    for thread in threads:
        thread.start()
    try:
        while not stopping.wait(0.5):
            if not all(t.is_alive() for t in threads):
                raise SystemExit("a sink stopped unexpectedly")
    finally:
        _stop_sinks(sinks, threads)
        warehouse.close()


def run_processor(settings: Settings, ready_file: Path | None = None) -> None:
    """Run the Faust worker until SIGINT/SIGTERM; blocks."""
    topics = Topics(settings.topic_prefix)
    view = CatalogView(settings.kafka_bootstrap, topics.catalog)
    seen = IdempotencyStore(settings.kafka_bootstrap, topics.idempotency)
    view.start()
    seen.start()
    if not (view.wait_ready(60) and seen.wait_ready(60)):
        raise SystemExit("the catalog or idempotency view did not catch up within 60 s")
    app = create_processor_app(settings, settings.kafka_bootstrap, view, seen)
    ready = ready_file or settings.state_dir / "run" / "processor.ready"
    worker = ProcessorWorker(app, ready_file=ready, loglevel="WARNING", quiet=True)
    try:
        worker.execute_from_commandline()
    finally:
        seen.stop()
        view.stop()
