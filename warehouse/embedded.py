"""ChdbWarehouse: the warehouse as embedded ClickHouse (chDB) in this process.

One chDB session owns the data folder; chDB locks it, so a second process (or a
second ChdbWarehouse on another folder in this process) cannot open it while
this one is open. Every call holds one threading.Lock: the HTTP edge queries
while the in-process sink inserts from another thread, and a session also
carries state (the current database) that must not interleave. So every method
may block behind another thread's statement, then for the statement itself.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
from chdb import session as chdb_session

from warehouse import arrowconv, ddl, literals, migrations
from warehouse.backend import (
    Column,
    QueryResult,
    Warehouse,
    WarehouseError,
    WarehouseUnavailable,
    error_code,
    normalize_parameters,
)


class ChdbWarehouse(Warehouse):
    """Embedded ClickHouse with its data under `path` (created if missing).

    Raises WarehouseUnavailable when chDB cannot open the folder (e.g. another
    process holds it).
    """

    def __init__(self, path: Path, database: str):
        super().__init__(database)
        self.path = Path(path)
        self._lock = threading.Lock()
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._session: chdb_session.Session | None = chdb_session.Session(str(self.path))
        except Exception as exc:  # chDB raises plain RuntimeError-likes here
            # chDB's own message for a folder locked by another process is just
            # "Error initializing EmbeddedServer", hence the hint.
            raise WarehouseUnavailable(
                f"cannot open chDB at {self.path} (one process at a time; is another Sluice "
                f"process or a second warehouse folder open?): {exc}", error_code(str(exc))) from exc
        try:
            self._run(f"USE {self.database}")
        except WarehouseError as exc:
            if exc.code != 81:  # UNKNOWN_DATABASE
                self.close()
                raise  # else: fine before the first migrate(), which selects it

    def migrate(self) -> None:
        migrations.apply(self.database, self._run, self._applied_migrations)
        self._run(f"USE {self.database}")
        self._forget_tables()

    def _applied_migrations(self) -> set[int]:
        return {version for (version,) in self.query(migrations.applied_sql(self.database)).rows}

    def insert(self, table: str, columns: Mapping[str, Column], dedup_token: str | None = None) -> None:
        batch = arrowconv.to_arrow_table(table, columns, self.describe(table))
        if batch.num_rows == 0:
            return
        names = ", ".join(batch.column_names)  # plain identifiers: checked against DESCRIBE
        # async_insert is on by default in chDB; a synchronous insert is what
        # makes "returned" mean "stored" for the sink's offset commit.
        settings = "async_insert = 0"
        if dedup_token is not None:
            # ... and the views' blocks too, so a replayed batch never reaches the rollups.
            settings += (f", insert_deduplication_token = {literals.quote_string(dedup_token)}"
                         ", deduplicate_blocks_in_dependent_materialized_views = 1")
        sql = (f"INSERT INTO {self.database}.{ddl.identifier(table)} ({names}) SETTINGS {settings} "
               f"SELECT {names} FROM Python(sluice_insert_batch)")
        # chDB resolves Python(name) by looking `name` up in the calling frames.
        sluice_insert_batch = batch  # noqa: F841
        self._run(sql)

    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> QueryResult:
        params = {k: literals.parameter_text(v) for k, v in normalize_parameters(parameters).items()}
        result = self._run(sql, "ArrowTable", params)
        names, rows = arrowconv.to_rows(result if isinstance(result, pa.Table) else pa.table({}))
        return QueryResult(names, rows)

    def command(self, sql: str) -> None:
        self._run(sql)

    def _stream(self, sql: str, fmt: str) -> Iterator[bytes]:
        # Any other statement on the session ends a streaming query, so the lock
        # is held from the first chunk to the last (or to close()).
        with self._lock:
            if self._session is None:
                raise WarehouseError("the chDB warehouse is closed")
            try:
                stream = self._session.send_query(sql, fmt)
            except Exception as exc:
                raise WarehouseError(str(exc).strip(), error_code(str(exc))) from exc
            header = None  # chDB repeats a WithNames format's header in every chunk: keep the first
            try:
                while True:
                    try:
                        chunk = stream.fetch()
                    except Exception as exc:
                        raise WarehouseError(str(exc).strip(), error_code(str(exc))) from exc
                    if chunk is None:
                        return
                    data = chunk.bytes()
                    if fmt.endswith("WithNames"):
                        line = data[:data.find(b"\n") + 1]
                        if header is None:
                            header = line
                        elif line == header:
                            data = data[len(line):]
                    if data:
                        yield data
            finally:
                stream.close()

    def close(self) -> None:
        with self._lock:
            session, self._session = self._session, None
            if session is not None:
                session.close()

    def _run(self, sql: str, fmt: str = "CSV", params: dict[str, str] | None = None) -> Any:
        with self._lock:
            if self._session is None:
                raise WarehouseError("the chDB warehouse is closed")
            try:
                return self._session.query(sql, fmt, params=params or None)
            except Exception as exc:  # ChdbError, RuntimeError from the engine
                raise WarehouseError(str(exc).strip(), error_code(str(exc))) from exc
