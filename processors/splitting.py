"""A request's frame batch as Kafka messages under a byte budget.

A big request (7,000 frames of 6 metrics is ~2 MB once encoded: metric ids are
longer than the names they replace) would not fit one message. Its readings
are split into parts that each carry the batch's own fields (request id,
version, ...), so the sink writes the same rows whether or not a batch was
split, and a part replayed after a crash overwrites itself (readings are keyed
by org, thing, metric and event time).
"""

from __future__ import annotations

import math

import orjson
import pyarrow as pa

import schemas
from schemas import frames


def encode_frame_batch(batch: dict, budget: int) -> list[bytes]:
    """The encoded FrameBatch messages of `batch` (as a rulebook built it), each at
    most `budget` bytes.

    One encoding when it fits (the usual case). Otherwise the readings and
    locations are cut into about as many even parts as the size asks for, and a
    part still over budget (values of uneven size) is halved again. A single
    reading or location larger than the budget travels alone. The columns are
    converted to Arrow once; parts are slices of them.
    """
    return _encode_within(batch, frames.readings_batch(batch["readings"]),
                          frames.locations_batch(batch["locations"]), budget)


def _encode_within(batch: dict, readings: pa.RecordBatch, locations: pa.RecordBatch, budget: int) -> list[bytes]:
    encoded = frames.encode(batch, readings, locations)
    if len(encoded) <= budget or readings.num_rows + locations.num_rows <= 1:
        return [encoded]
    parts = math.ceil(len(encoded) * 1.1 / budget)  # 10% slack: parts are cut by count, not bytes
    return [message for part_readings, part_locations in _cut(readings, locations, parts)
            for message in _encode_within(batch, part_readings, part_locations, budget)]


def _cut(readings: pa.RecordBatch, locations: pa.RecordBatch,
         parts: int) -> list[tuple[pa.RecordBatch, pa.RecordBatch]]:
    """`parts` (at least 2) non-empty (readings, locations) slices of about equal size, in order.

    Readings then locations are numbered as one sequence, cut into even ranges.
    """
    n, total = readings.num_rows, readings.num_rows + locations.num_rows
    parts = max(2, min(parts, total))
    cut = []
    for i in range(parts):
        start, stop = total * i // parts, total * (i + 1) // parts
        r0, r1 = min(start, n), min(stop, n)
        l0, l1 = max(start - n, 0), max(stop - n, 0)
        cut.append((readings.slice(r0, r1 - r0), locations.slice(l0, l1 - l0)))
    return cut


def encode_record_batches(request_id: str, org_id: str, version: int, table: str, rows: list[dict],
                          budget: int) -> list[bytes]:
    """The encoded RecordBatch messages of `rows` for `table`, each at most `budget` bytes
    (halved until they fit; a single row larger than the budget travels alone).

    Rows are keyed in their tables by what they are (item key, record index), not by
    message, so a split changes no row.
    """
    encoded = schemas.encode(schemas.RECORD_BATCH, {"request_id": request_id, "org_id": org_id, "table": table,
                                                     "version": version, "rows": orjson.dumps(rows)})
    if len(encoded) <= budget or len(rows) <= 1:
        return [encoded]
    half = len(rows) // 2
    return [*encode_record_batches(request_id, org_id, version, table, rows[:half], budget),
            *encode_record_batches(request_id, org_id, version, table, rows[half:], budget)]
