"""`sluice sql`: a read-only query, printed as a table, CSV or JSON lines.

With the embedded warehouse the running edge owns chDB's folder, so while the
stack is up the query goes through the edge's admin SQL endpoint; otherwise
the warehouse is opened directly. Either way the engine's output is streamed:
rows are written as they arrive, never all held in memory (a table holds its
first rows, to size the columns, then streams too).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import IO

import httpx

from config import Settings

#: --format -> the edge's / warehouse's stream format (see warehouse.backend.STREAM_FORMATS)
FORMATS = {"table": "compact", "csv": "csv", "json": "json"}
#: rows a table reads before it fixes its column widths and starts printing
TABLE_SAMPLE_ROWS = 1000


class QueryRefused(Exception):
    """The warehouse (or the edge in front of it) refused or failed the query."""


@contextlib.contextmanager
def stream(settings: Settings, query: str, wire: str) -> Iterator[Iterator[bytes]]:
    """The result of a read-only query as chunks of bytes in `wire` format ("csv",
    "json" or "compact"), through the edge in embedded mode while it runs, else
    from the warehouse directly. Raises QueryRefused; blocks on the network/engine."""
    if not settings.embedded_warehouse:
        with _opened(settings, query, wire) as chunks:
            yield chunks
        return
    with _through_edge(settings, query, wire) as chunks:
        if chunks is not None:
            yield chunks
            return
    with _embedded_warehouse_folder(settings), _opened(settings, query, wire) as chunks:
        yield chunks


@contextlib.contextmanager
def _embedded_warehouse_folder(settings: Settings) -> Iterator[None]:
    """Hold the state folder while chDB is opened in it directly, so no `sluice up` starts
    meanwhile; refused when a stack owns it (starting: its edge does not answer yet)."""
    from sluice.state_lock import StateLock, StateLocked

    try:
        with StateLock(settings.state_dir, "sluice sql"):
            yield
    except StateLocked as exc:
        raise QueryRefused(f"{exc.holder} owns the warehouse in {exc.state_dir}, and its edge at "
                           f"http://{settings.http_host}:{settings.http_port} does not answer (yet)") from None


@contextlib.contextmanager
def _opened(settings: Settings, query: str, wire: str) -> Iterator[Iterator[bytes]]:
    """The result from the warehouse itself, opened for this query."""
    from warehouse import WarehouseError, open_warehouse
    from warehouse.backend import STREAM_FORMATS

    try:
        warehouse = open_warehouse(settings)
    except WarehouseError as exc:
        raise QueryRefused(str(exc)) from exc
    try:
        try:
            chunks = warehouse.readonly_stream(query, STREAM_FORMATS[wire])
        except WarehouseError as exc:
            raise QueryRefused(_reason(warehouse, exc)) from exc
        try:
            yield _refusals_named(warehouse, chunks)
        except KeyboardInterrupt:
            with contextlib.suppress(Exception):
                chunks.cancel()  # a server would otherwise run it on to its deadline
            raise
        finally:
            chunks.close()
    finally:
        warehouse.close()


@contextlib.contextmanager
def _through_edge(settings: Settings, query: str, wire: str) -> Iterator[Iterator[bytes] | None]:
    """The edge's streamed answer, or None when no edge listens."""
    from sluice.stack import admin_key

    url = f"http://{settings.http_host}:{settings.http_port}/v2/admin/sql"
    with httpx.Client(timeout=httpx.Timeout(60, read=None)) as client:
        request = client.build_request("POST", url, json={"sql": query, "format": wire},
                                       headers={"X-Api-Key": admin_key(settings)})
        try:
            reply = client.send(request, stream=True)
        except httpx.ConnectError:
            yield None
            return
        try:
            if reply.status_code != 200:
                body = reply.read()
                try:
                    message = json.loads(body)["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    message = body.decode(errors="replace")
                raise QueryRefused(message)
            yield _cut_short_named(reply.iter_bytes())
        finally:
            reply.close()


def _cut_short_named(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The edge's chunks, one held back: an edge that hits an error mid-stream ends the
    body with a line {"error": ...} and closes the connection; that line is raised as
    QueryRefused, not passed on."""
    held = b""
    try:
        for chunk in chunks:
            if held:
                yield held
            held = chunk
    except httpx.HTTPError as exc:
        before, _, last = held.rstrip(b"\n").rpartition(b"\n")
        try:
            message = json.loads(last)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            if held:
                yield held
            raise QueryRefused(f"the result was cut short ({exc}); see the edge's log") from exc
        if before:
            yield before + b"\n"
        raise QueryRefused(f"the result was cut short: {message}") from exc
    if held:
        yield held


def _refusals_named(warehouse, chunks: Iterator[bytes]) -> Iterator[bytes]:
    from warehouse import WarehouseError

    try:
        yield from chunks
    except WarehouseError as exc:
        raise QueryRefused(_reason(warehouse, exc)) from exc


def _reason(warehouse, exc: Exception) -> str:
    """The engine's refusal, led by the bound it ran into (and the setting that sets it), if any."""
    bound = warehouse.limits.exceeded(getattr(exc, "code", None), str(exc))
    return f"{bound[1]} ({bound[0]}): {exc}" if bound else str(exc)


@contextlib.contextmanager
def rows(settings: Settings, query: str) -> Iterator[tuple[list[str], Iterator[list]]]:
    """Column names (also when there are no rows) and an iterator of rows (JSON values:
    numbers, strings, lists, None) of a read-only query. Raises QueryRefused."""
    with stream(settings, query, "compact") as chunks:
        from warehouse.backend import lines  # (the warehouse loads pyarrow: only when used)

        found = lines(chunks)
        header = next(found, None)
        yield (json.loads(header) if header else []), (json.loads(line) for line in found)


def write_table(columns: list[str], rows: Iterator[list], out: IO[str]) -> int:
    """Print rows as a table as they come: the first TABLE_SAMPLE_ROWS size the
    columns (a longer value later widens only its own line). Returns the row count."""
    sample: list[list[str]] = []
    for row in rows:
        sample.append(_cells(row))
        if len(sample) >= TABLE_SAMPLE_ROWS:
            break
    widths = [max([len(c)] + [len(r[i]) for r in sample]) for i, c in enumerate(columns)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def fmt(values: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"

    print(line, fmt(columns), line, sep="\n", file=out)
    count = 0
    for cells in sample:
        print(fmt(cells), file=out)
        count += 1
    for row in rows:
        print(fmt(_cells(row)), file=out)
        count += 1
    print(line, f"({count} rows)", sep="\n", file=out, flush=True)
    return count


def _cells(row: list) -> list[str]:
    return ["" if v is None else v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in row]


def run_sql(settings: Settings, query: str, fmt: str = "table", out: IO[str] | None = None) -> int:
    """`sluice sql`: print the result in `fmt` (table, csv or json lines) to `out`."""
    out = out or sys.stdout
    try:
        if fmt == "table":
            with rows(settings, query) as (columns, found):
                if columns:
                    write_table(columns, found, out)
                else:
                    print("(0 rows)", file=out)
        else:
            binary = out.buffer if hasattr(out, "buffer") else None
            with stream(settings, query, FORMATS[fmt]) as chunks:
                for chunk in chunks:
                    if binary is not None:
                        binary.write(chunk)
                        binary.flush()
                    else:
                        out.write(chunk.decode())
            out.flush()
    except QueryRefused as exc:
        print(f"sluice sql: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `sluice sql … | head`: the reader has seen enough
        return 0
    return 0
