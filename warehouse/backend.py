"""The Warehouse interface that both backends (chDB, ClickHouse server) implement.

Also the result type. The errors every backend raises are in warehouse.errors
(importable from here too). Every Warehouse method may block (on the engine, on
the network, or for one of the embedded engine's sessions).

Row values are Python objects converted from ClickHouse's Arrow output, the same
way on both backends: DateTime64 -> datetime aware in UTC (tzinfo=timezone.utc),
Int64/UInt64 -> exact int, Float64 -> float, String/LowCardinality -> str,
Array -> list, Bool -> bool, Date -> date. Types Arrow has no equivalent for come
back raw: 32-bit DateTime and IPv4 as int, Enum as its number, (U)Int128/256 as
bytes; cast them in SQL (toDateTime64(x, 3), toString(x)) if that matters.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa

from warehouse import formats, guard, scoping
from warehouse.ddl import identifier
from warehouse.errors import ReadOnlyError, WarehouseBusy, WarehouseError, WarehouseUnavailable
from warehouse.limits import QueryLimits, settings_clause
from warehouse.literals import quote_string


@dataclasses.dataclass(frozen=True)
class QueryResult:
    """The rows of one query, as tuples in column order."""

    column_names: tuple[str, ...]
    rows: list[tuple]

    def dicts(self) -> list[dict[str, Any]]:
        """The rows as dicts keyed by column name (a later duplicate name wins)."""
        return [dict(zip(self.column_names, row)) for row in self.rows]


@dataclasses.dataclass(frozen=True)
class AnalystSql:
    """An analyst's query as it runs: `text`; `empty`, the same with LIMIT 0 (its
    columns without its work); `tag`, its log_comment, which finds it for KILL QUERY;
    `canonical`, the engine's reading of the query as given; `database`, the current
    database it runs in (None: the warehouse's)."""

    text: str
    empty: str
    tag: str
    canonical: str = ""
    database: str | None = None


class QueryStream:
    """A running analyst query's output, chunk by chunk as the engine produces it.

    Iterate it from one thread at a time. close() (from that thread, while no
    next() runs) ends the query and frees its slot; so does the last chunk or an
    error. cancel() may be called from any thread, also while another blocks in
    next(): it stops the query in the engine (KILL QUERY), and that next() then
    raises WarehouseError (QUERY_WAS_CANCELLED) within about a second.
    """

    def __init__(self, chunks: Iterator[bytes], cancel: Callable[[], None], release: Callable[[], None]):
        self._chunks = chunks
        self._cancel = cancel
        self._release = release
        self._closed = False

    def __iter__(self) -> "QueryStream":
        return self

    def __next__(self) -> bytes:
        if self._closed:
            raise StopIteration
        try:
            return next(self._chunks)
        except BaseException:
            self.close()
            raise

    def cancel(self) -> None:
        """Stop the query in the engine; may block briefly (one small statement). Raises WarehouseError."""
        if not self._closed:
            self._cancel()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._chunks.close()  # type: ignore[attr-defined]
        finally:
            self._release()

    def __del__(self) -> None:  # a stream dropped unclosed must not keep its slot
        self.close()


#: `sluice sql --format` names -> the ClickHouse output format streamed for it.
STREAM_FORMATS = {"csv": "CSVWithNames", "json": "JSONEachRow", "compact": "JSONCompactEachRowWithNames"}


def lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The non-empty lines of a streamed line format (CSV, JSON lines), without their
    newlines, out of chunks that may split them anywhere."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from (line for line in complete if line)
    if pending:
        yield pending


_CODE = re.compile(r"Code: (\d+)")
_UNKNOWN_TABLE, _UNKNOWN_DATABASE = 60, 81


def error_code(message: str) -> int | None:
    """The ClickHouse error code quoted in an error message ("Code: 60. ..."), if any."""
    match = _CODE.search(message)
    return int(match.group(1)) if match else None


Column = Sequence[Any] | pa.Array | pa.ChunkedArray


class Warehouse(abc.ABC):
    """ClickHouse behind one interface; unqualified table names mean `database`."""

    def __init__(self, database: str, limits: QueryLimits | None = None):
        self.database = identifier(database)
        self.limits = limits or QueryLimits.from_settings()
        self._column_types: dict[str, dict[str, str]] = {}
        self._analyst_slots = threading.BoundedSemaphore(self.limits.concurrency)
        self._scoped_orgs: set[str] = set()  # orgs whose views (warehouse.scoping) exist
        self._scoping = threading.Lock()

    @abc.abstractmethod
    def migrate(self) -> None:
        """Apply the schema migrations not yet applied (warehouse.migrations; a second
        call changes nothing), then make the database the default. Raises WarehouseError."""

    @abc.abstractmethod
    def insert(self, table: str, columns: Mapping[str, Column], dedup_token: str | None = None) -> None:
        """Insert columns (name -> equally long list or pyarrow array) into `table`.

        Columns left out get their defaults. DateTime64 columns take epoch
        milliseconds (int) or datetimes. With a `dedup_token`, inserting the same
        batch again with the same token adds nothing (insert_deduplication_token).
        An empty batch is a no-op. Raises ValueError for an unknown table or
        column or for unequal lengths, WarehouseError if ClickHouse refuses.
        """

    @abc.abstractmethod
    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> QueryResult:
        """Run a statement that returns rows. `parameters` fill `{name:Type}`
        placeholders server-side (never spliced into the SQL). Raises WarehouseError."""

    @abc.abstractmethod
    def command(self, sql: str) -> None:
        """Run a statement for its effect (DDL, OPTIMIZE, ...). Raises WarehouseError."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection / the embedded engine (and its folder lock). Idempotent."""

    # --- shared behaviour, written once on top of query() ---

    def readonly_query(self, sql: str) -> QueryResult:
        """Run a user's single SELECT (or WITH ... SELECT) with readonly=1, within
        the analyst limits (self.limits) and on one of their few slots.

        Raises ReadOnlyError for anything else (INSERT, DROP, SHOW, several
        statements, SETTINGS, functions reaching files or URLs, ...),
        WarehouseBusy at once when every slot is taken, and WarehouseError for a
        syntax error, a bound exceeded (limits.TIMEOUT_EXCEEDED, ...), or when
        the SELECT tries something readonly forbids.
        """
        wrapped = self._readonly_sql(sql)
        release = self._take_analyst_slot()
        try:
            return self._analyst_query(wrapped.text)
        finally:
            release()

    def readonly_stream(self, sql: str, fmt: str, org_id: str | None = None,
                        output: Mapping[str, str] | None = None) -> QueryStream:
        """readonly_query's checks, limits and slot, then the result in ClickHouse
        output format `fmt` (the engine's name of one of warehouse.formats.FORMATS) as a
        QueryStream; `output` names output settings (output_format_*) to write it with.
        With `org_id`, the query sees only that org's rows of the analyst tables and
        nothing else (warehouse.scoping; ReadOnlyError for anything that reaches out).

        The checks run (and raise ReadOnlyError / WarehouseError / WarehouseBusy)
        before this returns; the engine's own refusals and later failures raise
        WarehouseError from next(). The slot (and on embedded chDB its session)
        is held until the stream is exhausted, fails or is closed.
        """
        if fmt not in formats.FORMATS.values():
            raise ValueError(f"unknown stream format {fmt!r}")
        chosen = formats.output_settings(output or {})
        wrapped = (self._readonly_sql(sql, chosen) if org_id is None else self._org_sql(sql, org_id, chosen))
        release = self._take_analyst_slot()
        try:
            chunks = self._stream(wrapped, fmt)
        except BaseException:
            release()
            raise
        return QueryStream(chunks, lambda: self._kill(wrapped.tag), release)

    def _org_sql(self, sql: str, org_id: str, output: Mapping[str, Any]) -> "AnalystSql":
        """`sql` run in `org_id`'s database of views, after the engine's parse of it names
        nothing outside them; raises ReadOnlyError."""
        scoped = scoping.org_database(self.database, org_id)
        with self._scoping:
            if org_id not in self._scoped_orgs:
                for statement in scoping.view_statements(self.database, org_id):
                    self.command(statement)
                self._scoped_orgs.add(org_id)
        wrapped = self._readonly_sql(scoping.pointed(sql, self.database, scoped), output)
        ast = "\n".join(row[0] for row in self.query(f"EXPLAIN AST {wrapped.canonical}").rows)
        databases = {row[0] for row in self.query("SELECT name FROM system.databases").rows}
        scoping.check_scoped(ast, self.database, scoped, databases)
        return dataclasses.replace(wrapped, database=scoped)

    def _take_analyst_slot(self) -> Callable[[], None]:
        if not self._analyst_slots.acquire(blocking=False):
            raise WarehouseBusy(f"{self.limits.concurrency} analyst queries are running, as many as run at once; "
                                "try again when one has finished")
        return self._analyst_slots.release

    def _stream(self, sql: "AnalystSql", fmt: str) -> Iterator[bytes]:
        """The result of `sql` in format `fmt`, chunk by chunk, a *WithNames format's
        header even for no rows (may block, raises WarehouseError)."""
        raise NotImplementedError

    def _analyst_query(self, sql: str) -> QueryResult:
        """Run an analyst's wrapped statement (it carries its own settings)."""
        return self.query(sql)

    def _kill(self, tag: str) -> None:
        """Stop the analyst query tagged `tag` wherever it runs (ASYNC: does not wait for it to end)."""
        self.command(f"KILL QUERY WHERE Settings['log_comment'] = {quote_string(tag)} ASYNC")

    def _readonly_sql(self, sql: str, output: Mapping[str, Any] | None = None) -> "AnalystSql":
        """The user's query wrapped to run with readonly=1 within the analyst limits, written
        (when `output` is given) with the output settings of a stream and those; raises ReadOnlyError."""
        guard.check_readonly(sql)  # our reading of the text: clear refusals, no engine round trip
        # Then ClickHouse parses the text itself: formatQuery rejects several
        # statements (chDB would otherwise run them all) and gives back one
        # canonical statement without comments, whose first keyword is reliable.
        try:
            canonical = self.query("SELECT formatQuery({sql:String})", {"sql": sql}).rows[0][0]
        except WarehouseError as exc:
            if "Multi-statements" in str(exc):
                raise ReadOnlyError("only a single SELECT statement is allowed here, not several") from exc
            raise
        keyword = canonical.split(None, 1)[0].upper() if canonical.strip() else ""
        if keyword.startswith("("):
            keyword = "SELECT"  # a parenthesized SELECT / UNION is the only statement opening with "("
        if keyword not in ("SELECT", "WITH"):
            raise ReadOnlyError(f"only a single SELECT statement is allowed here, not {keyword or 'nothing'}")
        guard.check_readonly(canonical)  # the engine's reading of it, checked the same way
        # Top-level clauses start unindented lines of the canonical text.
        if any(line.startswith(("FORMAT ", "INTO OUTFILE ")) for line in canonical.splitlines()):
            raise ReadOnlyError("leave out FORMAT and INTO OUTFILE: results come back as rows")
        # As a subquery it cannot carry FORMAT / INTO OUTFILE, and the outer
        # SETTINGS makes the whole query readonly (inner SETTINGS cannot undo it;
        # readonly = 1, not 2: 2 lets table functions such as file() through).
        # Output settings and the limits come first: once readonly = 1 applies, none can change.
        output_settings = "" if output is None else settings_clause(
            {"output_format_json_quote_64bit_integers": 0, "output_format_json_quote_denormals": 1, **output}) + ", "
        tag = f"sluice-sql:{uuid.uuid4().hex}"
        limits = settings_clause({**self.limits.for_analysts(), "log_comment": tag})
        tail = f"SETTINGS {output_settings}{limits}, readonly = 1"
        return AnalystSql(f"SELECT * FROM (\n{canonical}\n) {tail}",
                          f"SELECT * FROM (\n{canonical}\n) LIMIT 0 {tail}", tag, canonical)

    def describe(self, table: str) -> dict[str, str]:
        """Column name -> ClickHouse type of `table`, in table order; cached per table
        (migrate() clears the cache). Raises ValueError for an unknown table."""
        types = self._column_types.get(table)
        if types is None:
            name = f"{self.database}.{identifier(table)}"
            try:
                rows = self.query(f"DESCRIBE TABLE {name}").rows
            except WarehouseError as exc:
                if exc.code in (_UNKNOWN_TABLE, _UNKNOWN_DATABASE):
                    raise ValueError(f"unknown table {name}") from exc
                raise
            types = self._column_types[table] = {row[0]: row[1] for row in rows}
        return types

    def _forget_tables(self) -> None:
        self._column_types.clear()

    def __enter__(self) -> "Warehouse":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def normalize_parameters(parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """Query parameters with datetimes/dates turned into ClickHouse text, so both
    backends read them the same way (aware datetimes in UTC; naive ones are taken
    as UTC; fractional seconds only when present) and bools into 1/0."""
    return {identifier(k): _normalize(v) for k, v in (parameters or {}).items()}


def _normalize(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f" if value.microsecond else "%Y-%m-%d %H:%M:%S")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return type(value)(_normalize(v) for v in value)
    return value
