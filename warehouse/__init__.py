"""The warehouse: ClickHouse behind one interface, embedded (chDB) or a server.

Imports only the standard library, third-party packages and `config`.
"""

from __future__ import annotations

from config import Settings
from warehouse.backend import (
    QueryResult,
    ReadOnlyError,
    Warehouse,
    WarehouseError,
    WarehouseUnavailable,
)

__all__ = [
    "QueryResult",
    "ReadOnlyError",
    "Warehouse",
    "WarehouseError",
    "WarehouseUnavailable",
    "open_warehouse",
]


def open_warehouse(settings: Settings) -> Warehouse:
    """The configured warehouse: chDB under settings.chdb_path when no
    CLICKHOUSE_URL is set, else that server. Does not migrate.

    Blocks while opening (chDB start-up, or the server's first answer); raises
    WarehouseUnavailable if the folder is locked or the server is unreachable.
    """
    if settings.embedded_warehouse:
        from warehouse.embedded import ChdbWarehouse  # chDB loads a large library: only when used

        return ChdbWarehouse(settings.chdb_path, settings.database)
    from warehouse.server import ServerWarehouse

    return ServerWarehouse(settings.clickhouse_url, settings.database)
