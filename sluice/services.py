"""The three long-running services, each a foreground process.

`edge` serves HTTP; with the embedded warehouse it also runs the readings sink
in a thread, because chDB's data folder belongs to one process.
`processor` is the Faust worker. `sink` is the readings sink on its own, for a
ClickHouse server.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import uvicorn

from catalog.view import CatalogView
from config import Settings
from processors.app import ProcessorWorker, create_app as create_processor_app
from producers.app import create_app as create_edge_app
from schemas import Topics
from sinks.frames_sink import frames_sink
from warehouse import open_warehouse

log = logging.getLogger(__name__)


def run_edge(settings: Settings) -> None:
    """Serve HTTP until SIGINT/SIGTERM; blocks."""
    warehouse = open_warehouse(settings)
    warehouse.migrate()
    sink = None
    if settings.embedded_warehouse:
        sink = frames_sink(settings, settings.kafka_bootstrap, warehouse)
        threading.Thread(target=sink.run, name="readings-sink", daemon=True).start()
    app = create_edge_app(settings, settings.kafka_bootstrap, warehouse)
    try:
        uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_level="warning",
                    access_log=False, timeout_graceful_shutdown=10)
    finally:
        if sink is not None:
            sink.stop()
        warehouse.close()


def run_sink(settings: Settings) -> None:
    """Run the readings sink against a ClickHouse server until SIGINT/SIGTERM; blocks."""
    import signal

    warehouse = open_warehouse(settings)
    warehouse.migrate()
    sink = frames_sink(settings, settings.kafka_bootstrap, warehouse)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sink.stop())
    try:
        sink.run()
    finally:
        warehouse.close()


def run_processor(settings: Settings, ready_file: Path | None = None) -> None:
    """Run the Faust worker until SIGINT/SIGTERM; blocks."""
    view = CatalogView(settings.kafka_bootstrap, Topics(settings.topic_prefix).catalog)
    view.start()
    if not view.wait_ready(60):
        raise SystemExit("the catalog view did not catch up within 60 s")
    app = create_processor_app(settings, settings.kafka_bootstrap, view)
    ready = ready_file or settings.state_dir / "run" / "processor.ready"
    worker = ProcessorWorker(app, ready_file=ready, loglevel="WARNING", quiet=True)
    try:
        worker.execute_from_commandline()
    finally:
        view.stop()
