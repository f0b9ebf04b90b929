"""Verdicts → ingest_log rows: a pure function from decoded Verdict records to columns."""

from __future__ import annotations

import orjson

COLUMNS = ("request_id", "org_id", "thing_id", "route", "status", "http_status", "frames_received",
           "frames_ingested", "metrics", "errors", "duplicate_of", "received_at", "processed_at", "key_id", "stream",
           "report")


def ingest_log_columns(verdicts: list[dict]) -> dict[str, list]:
    """One list per ingest_log column, one row per verdict (the insert's shape).

    A missing thing id or duplicate_of becomes "" (the columns is not Nullable); errors become one
    JSON array string of {code, message, field}; times stay epoch milliseconds.
    """
    columns: dict[str, list] = {name: [] for name in COLUMNS}
    for v in verdicts:
        columns["request_id"].append(v["request_id"])
        columns["org_id"].append(v["org_id"])
        columns["thing_id"].append(v["thing_id"] or "")
        columns["route"].append(v["route"])
        columns["status"].append(v["status"])
        columns["http_status"].append(v["http_status"])
        columns["frames_received"].append(v["frames_received"])
        columns["frames_ingested"].append(v["frames_ingested"])
        columns["metrics"].append(list(v["metrics"]))
        columns["errors"].append(orjson.dumps(v["errors"]).decode())
        columns["duplicate_of"].append(v.get("duplicate_of") or "")
        columns["received_at"].append(v["received_at"])
        columns["processed_at"].append(v["processed_at"])
        columns["key_id"].append(v.get("key_id") or "")
        columns["stream"].append(v.get("stream") or "")
        columns["report"].append(v.get("report") or "")
    return columns
