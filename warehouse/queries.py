"""Read queries shared by the HTTP API and the CLI.

Each takes a Warehouse, blocks for one query, and raises WarehouseError if it fails.
"""

from __future__ import annotations

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
