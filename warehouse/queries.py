"""Read queries shared by the HTTP API and the CLI.

Each takes a Warehouse, blocks for one query, and raises WarehouseError if it fails.
"""

from __future__ import annotations

import json
from typing import Any

from warehouse.backend import Warehouse

# Latest by *event time*: a backfilled older reading inserted later must not win,
# so argMax over (ts, version) rather than insertion order; among equal ts the
# later acceptance (larger version) wins. No FINAL: argMax already ignores the
# not-yet-merged duplicates ReplacingMergeTree leaves behind.
_LATEST_EVENT = """
SELECT
    metric_id,
    toUnixTimestamp64Milli(latest.1) AS ts,
    latest.2 AS data_type,
    latest.3 AS value,
    latest.4 AS value_long,
    latest.5 AS value_string
FROM (
    SELECT
        metric_id,
        argMax((ts, data_type, value, value_long, value_string), (ts, version)) AS latest
    FROM readings
    WHERE org_id = {org_id:String} AND thing_id = {thing_id:String}
    GROUP BY metric_id
)
ORDER BY metric_id
"""


def latest_event(wh: Warehouse, org_id: str, thing_id: str) -> list[dict[str, Any]]:
    """The latest value of each metric of a thing by event time, ordered by metric_id.

    Each dict: metric_id, ts (epoch ms), data_type, value (float for Double, int
    for Long, bool for Boolean, str for String).
    """
    result = wh.query(_LATEST_EVENT, {"org_id": org_id, "thing_id": thing_id})
    return [
        {"metric_id": metric_id, "ts": ts, "data_type": data_type,
         "value": typed_value(data_type, value, value_long, value_string)}
        for metric_id, ts, data_type, value, value_long, value_string in result.rows
    ]


def typed_value(data_type: str, value: float, value_long: int, value_string: str) -> Any:
    """A reading's value as the Python type its data_type names (readings columns in,
    exact ints from value_long for Long and Boolean)."""
    if data_type == "Long":
        return value_long
    if data_type == "Boolean":
        return bool(value_long)
    if data_type == "String":
        return value_string
    return value


# The ingest log keeps every verdict a request received (a replayed request gets
# a newer one); the newest by processed_at is the one that counts. No FINAL:
# ordering and LIMIT 1 [BY request_id] pick it whether or not merges have run.
_VERDICT_COLUMNS = """
    request_id, thing_id, route, status, http_status, frames_received, frames_ingested, metrics, errors,
    duplicate_of, key_id, stream, report, toUnixTimestamp64Milli(received_at) AS received_at,
    toUnixTimestamp64Milli(processed_at) AS processed_at"""

_INGEST_VERDICT = f"""
SELECT {_VERDICT_COLUMNS}
FROM ingest_log
WHERE org_id = {{org_id:String}} AND request_id = {{request_id:String}}
ORDER BY processed_at DESC
LIMIT 1
"""

_RECENT_VERDICTS = f"""
SELECT {_VERDICT_COLUMNS}
FROM ingest_log
WHERE org_id = {{org_id:String}} AND ({{thing_id:String}} = '' OR thing_id = {{thing_id:String}})
ORDER BY processed_at DESC, request_id
LIMIT 1 BY request_id
LIMIT {{limit:UInt32}}
"""


def ingest_verdict(wh: Warehouse, org_id: str, request_id: str) -> dict[str, Any] | None:
    """The newest verdict on one of the org's requests, or None if none is stored (yet).

    Keys: request_id, thing_id (None when the request named none), route, key_id (the API
    key that sent it), stream (the stream, harbor or data source it wrote, else ""), status,
    http_status, frames_received, frames_ingested, metrics (names), errors (list of
    {code, message, field}), report (a template request's processing report, else None),
    duplicate_of (the first request of a repeated Idempotency-Key, else None), received_at
    and processed_at (epoch ms).
    """
    rows = wh.query(_INGEST_VERDICT, {"org_id": org_id, "request_id": request_id}).dicts()
    return _verdict(rows[0]) if rows else None


def recent_verdicts(wh: Warehouse, org_id: str, thing_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The org's newest verdict per request, most recently processed first, at most
    `limit`; only one thing's requests when `thing_id` is given. Dicts as ingest_verdict."""
    params = {"org_id": org_id, "thing_id": thing_id or "", "limit": limit}
    return [_verdict(row) for row in wh.query(_RECENT_VERDICTS, params).dicts()]


def _verdict(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "thing_id": row["thing_id"] or None, "duplicate_of": row["duplicate_of"] or None,
            "errors": json.loads(row["errors"] or "[]"),
            "report": json.loads(row["report"]) if row.get("report") else None}


# The per-key (per-connector) log of seed 002: every request one API key made, newest
# first by acceptance time, each with its newest verdict. The cursor is the last entry's
# (received_at, request_id); pages stay stable while new requests arrive.
_KEY_LOG = f"""
SELECT request_id, thing_id, route, stream, status, http_status, frames_received, frames_ingested, errors,
    duplicate_of, received_at, processed_at
FROM (
    SELECT {_VERDICT_COLUMNS}
    FROM ingest_log
    WHERE org_id = {{org_id:String}} AND key_id = {{key_id:String}}
    ORDER BY processed_at DESC
    LIMIT 1 BY request_id
)
WHERE (received_at, request_id) < ({{before_ts:Int64}}, {{before_id:String}})
ORDER BY received_at DESC, request_id DESC
LIMIT {{limit:UInt32}}
"""
_NO_CURSOR = (2**63 - 1, "")


def key_log(wh: Warehouse, org_id: str, key_id: str, limit: int = 50,
            before: tuple[int, str] | None = None) -> list[dict[str, Any]]:
    """The requests of one API key, newest first (by received_at, then request id), at most
    `limit`, only those before `before` (a (received_at, request_id) cursor) when given.
    Dicts as ingest_verdict, plus `stream` (None when the request named none)."""
    before_ts, before_id = before or _NO_CURSOR
    params = {"org_id": org_id, "key_id": key_id, "limit": limit, "before_ts": before_ts, "before_id": before_id}
    return [{**_verdict(row), "stream": row["stream"] or None} for row in wh.query(_KEY_LOG, params).dicts()]


# What the pipeline wrote for one API key (an integration's messages carry its id as their key),
# from each request's newest verdict; a repeat of an Idempotency-Key (a webhook's replay) counts
# nothing, since its first request's verdict already does.
_KEY_TOTALS = """
SELECT count() AS requests, sum(frames_ingested) AS readings,
    sum(JSONExtractUInt(report, 'metricValuesWritten')) AS metric_values,
    toUnixTimestamp64Milli(max(received_at)) AS newest_received_at
FROM (
    SELECT frames_ingested, report, received_at, duplicate_of
    FROM ingest_log
    WHERE org_id = {org_id:String} AND key_id = {key_id:String}
    ORDER BY processed_at DESC
    LIMIT 1 BY request_id
)
WHERE duplicate_of = ''
"""


def key_totals(wh: Warehouse, org_id: str, key_id: str) -> dict[str, int | None]:
    """The requests of one API key the ingest log holds, the readings and metric values they
    wrote, and the newest one's received_at (epoch ms; None when there is none)."""
    row = wh.query(_KEY_TOTALS, {"org_id": org_id, "key_id": key_id}).dicts()[0]
    return {"requests": row["requests"], "readings": row["readings"], "metric_values": row["metric_values"],
            "newest_received_at": row["newest_received_at"] if row["requests"] else None}
