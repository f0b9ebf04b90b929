"""The warehouse: ClickHouse behind one interface, embedded (chDB) or a server.

Imports only the standard library, third-party packages and `config`.
"""

from __future__ import annotations

from config import Settings
from warehouse.backend import QueryResult, QueryStream, Warehouse
from warehouse.errors import ReadOnlyError, WarehouseBusy, WarehouseError, WarehouseUnavailable
from warehouse.limits import QueryLimits

__all__ = [
    "QueryLimits",
    "QueryResult",
    "QueryStream",
    "ReadOnlyError",
    "Warehouse",
    "WarehouseBusy",
    "WarehouseError",
    "WarehouseUnavailable",
    "open_warehouse",
]


def open_warehouse(settings: Settings) -> Warehouse:
    """The configured warehouse: chDB under settings.chdb_path when no
    CLICKHOUSE_URL is set, else that server, with the query limits the
    settings set (SLUICE_SQL_*). Does not migrate.

    Blocks while opening (chDB start-up, or the server's first answer); raises
    WarehouseUnavailable if the folder is locked or the server is unreachable.
    """
    limits = QueryLimits.from_settings(settings)
    if settings.embedded_warehouse:
        from warehouse.embedded import ChdbWarehouse  # chDB loads a large library: only when used

        return ChdbWarehouse(settings.chdb_path, settings.database, limits=limits)
    from warehouse.server import ServerWarehouse

    return ServerWarehouse(settings.clickhouse_url, settings.database, limits=limits)
