"""Every sink that feeds the warehouse, built in one place so the policy is visible."""

from __future__ import annotations

from config import Settings
from sinks.batching import BatchingSink
from sinks.catalog_sink import catalog_sink
from sinks.frames_sink import frames_sink
from sinks.ingest_log_sink import ingest_log_sink
from sinks.rejects_sink import rejects_sink
from warehouse.backend import Warehouse


def warehouse_sinks(settings: Settings, bootstrap: str, warehouse: Warehouse) -> list[BatchingSink]:
    """The sinks a warehouse-owning process runs, each in its own consumer group."""
    return [
        frames_sink(settings, bootstrap, warehouse),
        ingest_log_sink(settings, bootstrap, warehouse),
        rejects_sink(settings, bootstrap, warehouse),
        catalog_sink(settings, bootstrap, warehouse),
    ]
