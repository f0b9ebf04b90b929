"""RecordBatch rows of seed 002's items → stream_items columns.

The rows carry each item as a JSON object; the table's `item` column has
ClickHouse's JSON type, which both backends fill from the item's JSON text.
"""

from __future__ import annotations

import orjson

TABLE = "stream_items"
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
