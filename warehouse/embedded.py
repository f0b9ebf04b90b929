"""ChdbWarehouse: the warehouse as embedded ClickHouse (chDB) in this process.

chDB runs one engine per process over one data folder and locks the folder, so a
second process (or a second ChdbWarehouse on another folder in this process)
cannot open it while this one is open. Over that engine, statements run on a
small pool of chDB sessions, one statement (or one stream, first chunk to last)
per session at a time: the edge's sinks insert from their own threads while it
serves queries, and with one session each would wait behind the others. chDB
runs statements of different sessions concurrently. A session carries state
(the current database, set by USE), so each call checks out a whole session and
every session selects the database before its first use. A call blocks only when
every session is busy, then for the statement itself.
"""

from __future__ import annotations

import contextlib
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

#: Sessions open at most at once, so statements running at once. A session costs
#: next to nothing (about a millisecond to open, no memory to speak of): the
#: bound is on concurrent statements, whose memory adds up and which share the
#: same cores (the engine already spreads one statement over them). The edge runs
#: five sinks, one statement each at a time; six lets all of them insert at once
#: and still leaves the read side a session, so a query waits behind another
#: query at worst, never behind inserts alone.
SESSIONS = 6

_UNKNOWN_DATABASE = 81


class _Session:
    """One pooled chDB session and whether it has selected the warehouse's database."""

    __slots__ = ("chdb", "uses_database")

    def __init__(self, chdb: chdb_session.Session):
        self.chdb = chdb
        self.uses_database = False


class ChdbWarehouse(Warehouse):
    """Embedded ClickHouse with its data under `path` (created if missing), run on
    up to `sessions` concurrent chDB sessions.

    Raises WarehouseUnavailable when chDB cannot open the folder (e.g. another
    process holds it).
    """

    def __init__(self, path: Path, database: str, sessions: int = SESSIONS, engine_settings: str = ""):
        super().__init__(database)
        self.path = Path(path)
        # chDB's connection string takes server settings as a query string (`name=value&...`);
        # every session gets the same one, though the engine reads it when the first opens.
        self._target = f"{self.path}?{engine_settings}" if engine_settings else str(self.path)
        self._bound = max(1, sessions)
        self._pool = threading.Condition()  # guards the three fields below
        self._idle: list[_Session] = []
        self._open = 1  # sessions open: idle, in use, or being opened (the first, below)
        self._closed = False
        self.path.mkdir(parents=True, exist_ok=True)
        # The first session now, so a folder another process holds fails here.
        session = self._open_session()
        try:
            self._use_database(session)
        except WarehouseError:
            self._checkin(session)
            self.close()
            raise
        self._checkin(session)

    def migrate(self) -> None:
        migrations.apply(self.database, self._run, lambda sql: self.query(sql).rows)
        self._forget_tables()  # (sessions opened before the database existed select it at their next use)

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
        # Any other statement on the session ends a streaming query, so the
        # session stays checked out from the first chunk to the last.
        with self._session() as session:
            try:
                stream = session.send_query(sql, fmt)
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
        """Close the idle sessions now and each one in use when its statement or
        stream ends; chDB releases the engine and the folder with the last one.
        Later calls raise WarehouseError. Does not wait."""
        with self._pool:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._pool.notify_all()  # callers waiting for a session: it is closed
        for session in idle:
            session.chdb.close()

    def _run(self, sql: str, fmt: str = "CSV", params: dict[str, str] | None = None) -> Any:
        with self._session() as session:
            try:
                return session.query(sql, fmt, params=params or None)
            except Exception as exc:  # ChdbError, RuntimeError from the engine
                raise WarehouseError(str(exc).strip(), error_code(str(exc))) from exc

    @contextlib.contextmanager
    def _session(self) -> Iterator[chdb_session.Session]:
        """A session of this warehouse's own for the duration of the block."""
        session = self._checkout()
        try:
            if not session.uses_database:
                self._use_database(session)
            yield session.chdb
        finally:
            self._checkin(session)

    def _checkout(self) -> _Session:
        with self._pool:
            while True:
                if self._closed:
                    raise WarehouseError("the chDB warehouse is closed")
                if self._idle:
                    return self._idle.pop()
                if self._open < self._bound:
                    self._open += 1  # reserved; opened below, outside the pool's lock
                    break
                self._pool.wait()
        try:
            return self._open_session()
        except BaseException:
            with self._pool:
                self._open -= 1
                self._pool.notify()
            raise

    def _checkin(self, session: _Session) -> None:
        with self._pool:
            if not self._closed:
                self._idle.append(session)
                self._pool.notify()
                return
            self._open -= 1
        session.chdb.close()

    def _open_session(self) -> _Session:
        try:
            return _Session(chdb_session.Session(self._target))
        except Exception as exc:  # chDB raises plain RuntimeError-likes here
            # chDB's own message for a folder locked by another process is just
            # "Error initializing EmbeddedServer", hence the hint.
            raise WarehouseUnavailable(
                f"cannot open chDB at {self.path} (one process at a time; is another Sluice "
                f"process or a second warehouse folder open?): {exc}", error_code(str(exc))) from exc

    def _use_database(self, session: _Session) -> None:
        """Make the warehouse's database the session's current one, unless it does not
        exist yet (before the first migrate(): statements name their database then)."""
        try:
            session.chdb.query(f"USE {self.database}")
        except Exception as exc:
            code = error_code(str(exc))
            if code == _UNKNOWN_DATABASE:
                return
            raise WarehouseError(str(exc).strip(), code) from exc
        session.uses_database = True
