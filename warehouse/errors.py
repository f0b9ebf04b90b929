"""The errors every warehouse backend raises, so callers never see chdb or
clickhouse_connect exceptions. Their own module: the backends and the read-only
guard both raise them, and neither imports the other for it."""

from __future__ import annotations


class WarehouseError(Exception):
    """ClickHouse refused or failed a statement. `code` is its error code, if known."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


class WarehouseUnavailable(WarehouseError):
    """The warehouse could not be reached or opened (network, data folder locked)."""


class ReadOnlyError(WarehouseError):
    """readonly_query was given something other than one SELECT statement."""


class WarehouseBusy(WarehouseError):
    """As many analyst queries as QueryLimits.concurrency allows are running: try again shortly."""
