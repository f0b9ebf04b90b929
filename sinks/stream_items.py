"""RecordBatch rows of seed 002's items → stream_items_input columns.

The rows carry each item as a JSON object; it is inserted as JSON text, and the
warehouse's stream_items_mv parses it into stream_items' JSON column (with the
settings that keep strings strings, which an insert of ours could not carry).
"""

from __future__ import annotations

import orjson

TABLE = "stream_items_input"  # parsed into stream_items by a materialized view
ROW_COLUMNS = ("stream", "item_key", "item_index", "received_at")


def stream_items_columns(batches: list[dict]) -> dict[str, list]:
    """One list per stream_items column, one row per item of the batches meant for the table."""
    out: dict[str, list] = {name: [] for name in (*ROW_COLUMNS, "item", "request_id", "org_id", "version")}
    for batch in batches:
        if batch["table"] != TABLE:
            continue
        rows = orjson.loads(batch["rows"])
        for row in rows:
            for name in ROW_COLUMNS:
                out[name].append(row[name])
            out["item"].append(orjson.dumps(row["item"]).decode())
        for name in ("request_id", "org_id", "version"):
            out[name].extend([batch[name]] * len(rows))
    return out
