"""Rows of an import file → frames (a thing, an event time, its metric values), one chunk at a time.

Two row shapes, told apart per row by its columns:
- long: `thing_id, timestamp, metric, value` (one reading per row);
- wide: `thing_id, timestamp` and one column per metric (empty cells are no reading).
`timestamp` is epoch milliseconds or ISO 8601 (without an offset: UTC).

A chunk ends at a row boundary once it holds `chunk_values` values; its `end` is
where the next chunk starts (a byte offset for NDJSON and CSV, a row number for
Parquet), so a checkpoint can resume there. Bad rows are counted with their reason
and number (the line for NDJSON and CSV, the row from 1 for Parquet); they never stop the import. Reading blocks on the file only.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import math
from collections.abc import Iterator
from pathlib import Path

import orjson

FORMATS = ("ndjson", "csv", "parquet")
_KEYS = {"thing_id", "timestamp"}
_LONG = {"metric", "value"}


class BadRow(ValueError):
    """A row that cannot become a frame; its message is the reason."""


@dataclasses.dataclass
class Chunk:
    """Frames of consecutive rows: (thing_id, ts_ms, {metric: value}), and the rows that were bad."""

    start: int
    end: int
    frames: list[tuple[str, int, dict]] = dataclasses.field(default_factory=list)
    bad: list[tuple[int, str]] = dataclasses.field(default_factory=list)  # (row number, reason)
    rows: int = 0
    values: int = 0

    def add(self, frame: tuple[str, int, dict]) -> None:
        self.frames.append(frame)
        self.values += len(frame[2])


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("ndjson", "jsonl", "json"):
        return "ndjson"
    if suffix in ("csv", "parquet"):
        return suffix
    raise ValueError(f"cannot tell the format of {path.name} from its suffix; pass --format ({', '.join(FORMATS)})")


def parse_timestamp(value: object) -> int:
    """Epoch ms from epoch ms (a number or digits) or an ISO 8601 string or a datetime."""
    if isinstance(value, bool) or value is None or value == "":
        raise BadRow("timestamp missing")
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise BadRow("timestamp not finite")
        return int(value)
    if isinstance(value, datetime.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)
        return round(moment.timestamp() * 1000)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        try:
            return parse_timestamp(datetime.datetime.fromisoformat(text.replace("Z", "+00:00")))
        except ValueError:
            pass
    raise BadRow(f"timestamp {str(value)[:40]!r} is neither epoch ms nor ISO 8601")


def scalar(value: object) -> object:
    """A cell as a reading's value: numbers from text, None for an empty cell or NaN."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text
    return value


def row_frame(row: dict) -> tuple[str, int, dict]:
    """One row (long or wide shape) as (thing_id, ts_ms, {metric: value}); raises BadRow with the reason."""
    if not isinstance(row, dict):
        raise BadRow("not an object")
    thing = row.get("thing_id")
    if not isinstance(thing, str) or not thing.strip():
        raise BadRow("thing_id missing")
    ts = parse_timestamp(row.get("timestamp"))
    others = row.keys() - _KEYS
    if others == _LONG:
        metric, value = row["metric"], scalar(row["value"])
        if not isinstance(metric, str) or not metric:
            raise BadRow("metric missing")
        if value is None:
            raise BadRow(f"value missing for {metric}")
        return thing, ts, {metric: value}
    metrics = {name: value for name in sorted(others) if (value := scalar(row[name])) is not None}
    if not metrics:  # (sorted: the same file gives the same bodies, whatever the column order)
        raise BadRow("no metric values")
    return thing, ts, metrics


def read_chunks(path: Path, fmt: str, chunk_values: int, start: int = 0, first_row: int = 0) -> Iterator[Chunk]:
    """Chunks of the file from position `start` (0, or a chunk's `end` from an earlier read);
    `first_row` is the number of rows before `start`, so bad rows are numbered from the file's start."""
    if fmt == "parquet":
        yield from _parquet_chunks(path, chunk_values, start)
    else:
        yield from _line_chunks(path, fmt, chunk_values, start, first_row)


def size(path: Path, fmt: str) -> int:
    """The file's last position: bytes, or rows for Parquet (for a progress bar)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return path.stat().st_size


def _line_chunks(path: Path, fmt: str, chunk_values: int, start: int, first_row: int) -> Iterator[Chunk]:
    with open(path, "rb") as handle:
        header: list[str] | None = None
        row_number = first_row
        if fmt == "csv":
            first = handle.readline()
            header = [h.strip() for h in next(csv.reader([first.decode("utf-8-sig")]))]
            start = max(start, handle.tell())
            row_number += 1  # bad rows are named by their line number, the header's included
        handle.seek(start)
        chunk = Chunk(start, start)
        position = start
        for line in handle:
            position += len(line)
            row_number += 1
            if line.strip():
                try:
                    if header is None:
                        try:
                            row = orjson.loads(line)
                        except orjson.JSONDecodeError:
                            raise BadRow("not valid JSON") from None
                    else:
                        cells = next(csv.reader([line.decode("utf-8")]))
                        if len(cells) != len(header):
                            raise BadRow(f"{len(cells)} cells for {len(header)} columns")
                        row = dict(zip(header, cells))
                    chunk.add(row_frame(row))
                except (BadRow, UnicodeDecodeError) as exc:
                    chunk.bad.append((row_number, str(exc)))
            chunk.rows += 1
            chunk.end = position
            if chunk.values >= chunk_values:
                yield chunk
                chunk = Chunk(position, position)
        if chunk.rows:
            yield chunk


def _parquet_chunks(path: Path, chunk_values: int, start: int) -> Iterator[Chunk]:
    import pyarrow.parquet as pq

    source = pq.ParquetFile(path)
    names = source.schema_arrow.names
    wide = sorted(set(names) - _KEYS) if set(names) - _KEYS != _LONG and _KEYS <= set(names) else None
    row = 0
    chunk = Chunk(start, start)
    for batch in source.iter_batches(batch_size=4096):
        if row + batch.num_rows <= start:
            row += batch.num_rows
            continue
        columns = batch.to_pydict()
        if wide is not None:  # the common case, without a dict per row: thing, ts, then the metric columns
            cells = zip(columns["thing_id"], columns["timestamp"], *(columns[n] for n in wide))
        for values in (cells if wide is not None else zip(*columns.values())):
            row += 1
            if row <= start:
                continue
            try:
                if wide is not None:
                    thing, ts = values[0], values[1]
                    metrics = {n: v for n, v in zip(wide, values[2:]) if v is not None and v == v}  # NaN: none
                    if not (type(ts) is int and isinstance(thing, str) and thing and metrics):
                        thing, ts, metrics = row_frame(dict(zip(("thing_id", "timestamp", *wide), values)))
                    chunk.add((thing, ts, metrics))
                else:
                    chunk.add(row_frame(dict(zip(names, values))))
            except BadRow as exc:
                chunk.bad.append((row, str(exc)))
            chunk.rows += 1
            chunk.end = row
            if chunk.values >= chunk_values:
                yield chunk
                chunk = Chunk(row, row)
    if chunk.rows:
        yield chunk
