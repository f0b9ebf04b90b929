"""ChdbWarehouse: the warehouse as embedded ClickHouse (chDB) in this process.

chDB runs one engine per process over one data folder and locks the folder, so a
second process (or a second ChdbWarehouse on another folder in this process)
cannot open it while this one is open. Over that engine, statements run on chDB
sessions, one statement (or one stream, first chunk to last) per session at a
time; chDB runs statements of different sessions concurrently. The sessions
form three lanes, each a small pool of its own, so one kind of work never waits
for a session another kind holds:
- writes: the sinks' inserts and the commands (DDL, migrations): the edge runs
  five sinks, one statement each at a time;
- reads: the read API's queries (and the warehouse's own small ones), each
  under the deadline and memory cap of QueryLimits.for_reads() (set once per
  session);
- analysts: the readonly_* queries, at most QueryLimits.concurrency at once
  (Warehouse refuses one more), plus one session to KILL one of them.
A session carries state (the current database, set by USE), so each call checks
out a whole session and every session selects the database before its first use.
A call blocks only when every session of its lane is busy, then for the
statement itself.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
from chdb import session as chdb_session

from warehouse import arrowconv, ddl, formats, literals, migrations
from warehouse.backend import (
    AnalystSql,
    Column,
    QueryResult,
    Warehouse,
    error_code,
    normalize_parameters,
)
from warehouse.errors import WarehouseError, WarehouseUnavailable
from warehouse.limits import QueryLimits, settings_clause

#: Sessions of the writes lane. A session costs next to nothing (about a
#: millisecond to open, no memory to speak of): the bound is on concurrent
#: statements, whose memory adds up and which share the same cores (the engine
#: already spreads one statement over them). Six lets the five sinks insert at
#: once with a command (a migration, OPTIMIZE) beside them.
SESSIONS = 6
#: Sessions of the reads lane: API reads running at once; one more waits (each is bounded by its deadline).
READ_SESSIONS = 4

_UNKNOWN_DATABASE = 81


class _Session:
    """One pooled chDB session, whether it has selected the warehouse's database,
    and whether it has run its lane's SET statement."""

    __slots__ = ("chdb", "uses_database", "prepared")

    def __init__(self, chdb: chdb_session.Session):
        self.chdb = chdb
        self.uses_database = False
        self.prepared = False


class _Lane:
    """A pool of at most `bound` sessions, opened as needed; `prepare` (a SET
    statement, or "") runs once on each before its first use."""

    def __init__(self, bound: int, open_session: Callable[[], _Session], prepare: str = ""):
        self.prepare = prepare
        self._bound = max(1, bound)
        self._open_session = open_session
        self._pool = threading.Condition()  # guards the three fields below
        self._idle: list[_Session] = []
        self._open = 0  # sessions open: idle, in use, or being opened
        self._closed = False

    def checkout(self) -> _Session:
        """An idle session, a new one below the bound, else wait for one. Raises
        WarehouseError once closed, WarehouseUnavailable if a session cannot open."""
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

    def checkin(self, session: _Session, broken: bool = False) -> None:
        """Return a session to the pool; a `broken` one (or any once closed) is closed instead."""
        with self._pool:
            if not (self._closed or broken):
                self._idle.append(session)
                self._pool.notify()
                return
            self._open -= 1
            self._pool.notify()  # room for a new session
        session.chdb.close()

    def close(self) -> None:
        """Close the idle sessions now and each one in use when its statement or
        stream ends; chDB releases the engine and the folder with the last one.
        Later calls raise WarehouseError. Does not wait."""
        for lane in (self._writes, self._reads, self._analysts):
            lane.close()

    def close(self) -> None:
        """Close the idle sessions now, each one in use at its checkin; wake the waiting."""
        with self._pool:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._pool.notify_all()
        for session in idle:
            session.chdb.close()


class ChdbWarehouse(Warehouse):
    """Embedded ClickHouse with its data under `path` (created if missing), its
    writes on up to `sessions` concurrent chDB sessions (reads and analyst
    queries on lanes of their own, see the module's doc).

    Raises WarehouseUnavailable when chDB cannot open the folder (e.g. another
    process holds it).
    """

    def __init__(self, path: Path, database: str, sessions: int = SESSIONS, engine_settings: str = "",
                 limits: QueryLimits | None = None):
        super().__init__(database, limits)
        self.path = Path(path)
        # chDB's connection string takes server settings as a query string (`name=value&...`);
        # every session gets the same one, though the engine reads it when the first opens.
        self._target = f"{self.path}?{engine_settings}" if engine_settings else str(self.path)
        self._writes = _Lane(sessions, self._open_session)
        self._reads = _Lane(READ_SESSIONS, self._open_session, f"SET {settings_clause(self.limits.for_reads())}")
        self._analysts = _Lane(self.limits.concurrency + 1, self._open_session)  # + 1: room for a KILL
        self.path.mkdir(parents=True, exist_ok=True)
        # The first session now, so a folder another process holds fails here.
        session = self._writes.checkout()
        try:
            self._use_database(session)
        except WarehouseError:
            self._writes.checkin(session)
            self.close()
            raise
        self._writes.checkin(session)

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
        return self._rows(self._run(sql, "ArrowTable", params, lane=self._reads))

    def command(self, sql: str) -> None:
        self._run(sql)

    def _analyst_query(self, sql: str) -> QueryResult:
        return self._rows(self._run(sql, "ArrowTable", lane=self._analysts))

    def _kill(self, tag: str) -> None:
        # On the analysts' own lane, which keeps a session beyond their slots for it.
        self._run(f"KILL QUERY WHERE Settings['log_comment'] = {literals.quote_string(tag)} ASYNC",
                  lane=self._analysts)

    @staticmethod
    def _rows(result: Any) -> QueryResult:
        names, rows = arrowconv.to_rows(result if isinstance(result, pa.Table) else pa.table({}))
        return QueryResult(names, rows)

    def _stream(self, sql: AnalystSql, fmt: str) -> Iterator[bytes]:
        # Any other statement on the session ends a streaming query, so the
        # session stays checked out from the first chunk to the last.
        with self._session(self._analysts, sql.database) as session:
            if formats.is_whole(fmt):
                # One document (JSON, Parquet, Arrow): chDB's stream would write one per chunk.
                yield self._whole(session, sql.text, fmt)
                return
            try:
                stream = session.send_query(sql.text, fmt)
            except Exception as exc:
                raise WarehouseError(str(exc).strip(), error_code(str(exc))) from exc
            header = None  # chDB repeats a WithNames format's header in every chunk: keep the first
            sent = False
            try:
                while True:
                    try:
                        chunk = stream.fetch()
                    except Exception as exc:
                        raise WarehouseError(str(exc).strip(), error_code(str(exc))) from exc
                    if chunk is None:
                        break
                    data = chunk.bytes()
                    if fmt.endswith("WithNames"):
                        line = data[:data.find(b"\n") + 1]
                        if header is None:
                            header = line
                        elif line == header:
                            data = data[len(line):]
                    if data:
                        sent = True
                        yield data
            finally:
                stream.close()
            if not sent:
                # No rows: a stream writes nothing, not even the names (or Native's empty
                # block) a query answers in full.
                names = self._whole(session, sql.empty, fmt)
                if names:
                    yield names

    @staticmethod
    def _whole(session: chdb_session.Session, sql: str, fmt: str) -> bytes:
        try:
            return session.query(sql, fmt).bytes() or b""
        except Exception as exc:
            raise WarehouseError(str(exc).strip(), error_code(str(exc))) from exc

    def close(self) -> None:
        """Close the idle sessions now and each one in use when its statement or
        stream ends; chDB releases the engine and the folder with the last one.
        Later calls raise WarehouseError. Does not wait."""
        for lane in (self._writes, self._reads, self._analysts):
            lane.close()

    def _run(self, sql: str, fmt: str = "CSV", params: dict[str, str] | None = None,
             lane: _Lane | None = None) -> Any:
        with self._session(lane or self._writes) as session:
            try:
                return session.query(sql, fmt, params=params or None)
            except Exception as exc:  # ChdbError, RuntimeError from the engine
                raise WarehouseError(str(exc).strip(), error_code(str(exc))) from exc

    @contextlib.contextmanager
    def _session(self, lane: _Lane, database: str | None = None) -> Iterator[chdb_session.Session]:
        """A session of `lane`'s own for the duration of the block, its current database
        `database` (an org's views) if given, else the warehouse's."""
        session = lane.checkout()
        broken = True
        try:
            if database is not None:
                session.uses_database = False  # the next use selects the warehouse's again
                try:
                    session.chdb.query(f"USE {ddl.identifier(database)}")
                except Exception as exc:
                    raise WarehouseError(str(exc).strip(), error_code(str(exc))) from exc
            elif not session.uses_database:
                self._use_database(session)
            if lane.prepare and not session.prepared:
                try:
                    session.chdb.query(lane.prepare)
                except Exception as exc:
                    raise WarehouseError(str(exc).strip(), error_code(str(exc))) from exc
                session.prepared = True
            yield session.chdb
            broken = False
        finally:
            # A session whose statement failed (or stream was cut) is not reused: chDB hands a
            # failed ArrowTable query's partial output to the session's next query as its result.
            lane.checkin(session, broken)

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
