"""ServerWarehouse: the warehouse on a ClickHouse server, over HTTP(S).

Uses clickhouse_connect without a server session, so one client is safe to
share between threads (each call is its own HTTP request). Every method blocks
on the network; connection failures raise WarehouseUnavailable, refusals
WarehouseError. Reads carry the deadline and memory cap of
QueryLimits.for_reads() as per-query settings; an analyst's query carries its
limits in its own SETTINGS clause (Warehouse._readonly_sql), and is stopped by
KILL QUERY, sent as another request.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from warehouse import arrowconv, ddl, migrations
from warehouse.limits import QueryLimits
from warehouse.backend import (
    AnalystSql,
    Column,
    QueryResult,
    Warehouse,
    error_code,
    normalize_parameters,
)
from warehouse.errors import ReadOnlyError, WarehouseError, WarehouseUnavailable


def connect(url: str) -> Client:
    """A clickhouse_connect client for http(s)://[user[:password]@]host[:port].

    Raises ValueError for another scheme or no host, WarehouseUnavailable if the
    server does not answer (get_client asks it for its version and timezone).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"CLICKHOUSE_URL must be http(s)://user:password@host:port, not {url!r}")
    secure = parts.scheme == "https"
    try:
        return clickhouse_connect.get_client(
            host=parts.hostname,
            port=parts.port or (8443 if secure else 8123),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password or ""),
            secure=secure,
            # A server session would make concurrent calls from the edge and the
            # sink fail with SESSION_IS_LOCKED; nothing here needs session state.
            autogenerate_session_id=False,
        )
    except OperationalError as exc:
        raise WarehouseUnavailable(f"cannot reach ClickHouse at {parts.hostname}: {exc}") from exc
    except ClickHouseError as exc:
        raise WarehouseError(str(exc), _code(exc)) from exc


class ServerWarehouse(Warehouse):
    """A ClickHouse server at `url` (see connect()); `client` replaces the
    connection made from the URL (tests, or a caller with special TLS needs)."""

    def __init__(self, url: str, database: str, *, client: Client | None = None,
                 limits: QueryLimits | None = None):
        super().__init__(database, limits)
        self._client = client if client is not None else connect(url)
        # Sent with every request as the default database; the database need
        # not exist until migrate(), whose DDL is fully qualified.
        self._client.database = self.database

    def migrate(self) -> None:
        migrations.apply(self.database, lambda sql: self._call(self._client.command, sql, use_database=False),
                         lambda sql: self.query(sql).rows)
        self._forget_tables()

    def insert(self, table: str, columns: Mapping[str, Column], dedup_token: str | None = None) -> None:
        batch = arrowconv.to_arrow_table(table, columns, self.describe(table))
        if batch.num_rows == 0:
            return
        settings: dict[str, Any] = {"async_insert": 0}  # stored before we return
        if dedup_token is not None:
            settings["insert_deduplication_token"] = dedup_token
            settings["deduplicate_blocks_in_dependent_materialized_views"] = 1
        self._call(self._client.insert_arrow, ddl.identifier(table), batch,
                   database=self.database, settings=settings)

    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> QueryResult:
        return self._query(sql, parameters, self.limits.for_reads())

    def _analyst_query(self, sql: str) -> QueryResult:
        return self._query(sql, None, None)  # its settings are in its text, which ends readonly

    def _query(self, sql: str, parameters: Mapping[str, Any] | None, settings: dict | None) -> QueryResult:
        result = self._call(self._client.query_arrow, sql, parameters=normalize_parameters(parameters) or None,
                            use_strings=True, settings=settings)
        names, rows = arrowconv.to_rows(result)
        return QueryResult(names, rows)

    def command(self, sql: str) -> None:
        self._call(self._client.command, sql)

    def _org_sql(self, sql: str, org_id: str, output: Mapping[str, Any]) -> AnalystSql:
        # clickhouse-connect sends one client-wide database; an org's views need their own per query.
        raise ReadOnlyError("org-scoped SQL needs the embedded warehouse for now; on a ClickHouse server, "
                            "query through the platform-admin key")

    def _stream(self, sql: AnalystSql, fmt: str) -> Iterator[bytes]:
        # A server writes a *WithNames format's header even when there are no rows.
        stream = self._call(self._client.raw_stream, sql.text, fmt=fmt)
        try:
            while True:
                data = self._call(stream.read, 1 << 16) if hasattr(stream, "read") else next(stream, b"")
                if not data:
                    return
                yield data
        finally:
            stream.close()

    def close(self) -> None:
        self._client.close()

    @staticmethod
    def _call(method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except OperationalError as exc:
            raise WarehouseUnavailable(str(exc), _code(exc)) from exc
        except ClickHouseError as exc:
            raise WarehouseError(str(exc), _code(exc)) from exc


def _code(exc: Exception) -> int | None:
    return getattr(exc, "code", None) or error_code(str(exc))
