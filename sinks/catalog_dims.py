"""Catalog records → dimension-table rows, so analysts join names and units in SQL.

Pure functions from decoded CatalogRecords to the columns of metric_definitions,
thing_types (one row per type version), things, places and datasources.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson


def _rows(records: list[dict], kind: str, row: Callable[[dict, dict], dict]) -> dict[str, list]:
    columns: dict[str, list] = {}
    for record in records:
        if record["kind"] != kind:
            continue
        body = orjson.loads(record["body"])
        values = {"org_id": record["org_id"], **row(record, body), "updated_at": record["updated_at"],
                  "deleted": 1 if body.get("deleted") else 0}
        for name, value in values.items():
            columns.setdefault(name, []).append(value)
    return columns


def _text(value: object) -> str:
    return "" if value is None else str(value)


def metric_definitions(records: list[dict]) -> dict[str, list]:
    return _rows(records, "metric", lambda r, b: {
        "metric_id": r["id"], "name": b["name"], "display_name": _text(b.get("displayName")),
        "description": _text(b.get("description")), "data_type": b["dataType"],
        "default_aggregation": b["defaultAggregation"], "unit_label": _text(b.get("unitLabel")),
        "enum_values": list(b.get("enumValues") or [])})


def thing_types(records: list[dict]) -> dict[str, list]:
    return _rows(records, "thing_type_version", lambda r, b: {
        "thing_type_id": b["thingTypeId"], "version_id": r["id"], "display_name": _text(b.get("displayName")),
        "description": _text(b.get("description")), "metric_ids": list(b["metricIds"])})


def things(records: list[dict]) -> dict[str, list]:
    return _rows(records, "thing", lambda r, b: {
        "thing_id": r["id"], "name": b["thingName"], "place_id": _text(b.get("placeId")),
        "thing_type_id": _text(b.get("thingTypeId")), "type_version_id": _text(b.get("thingTypeVersionId")),
        "manufacturer": _text(b.get("manufacturer")), "model": _text(b.get("model")),
        "properties": orjson.dumps(b.get("properties") or {}).decode()})


def places(records: list[dict]) -> dict[str, list]:
    return _rows(records, "place", lambda r, b: {
        "place_id": r["id"], "kind": b["kind"], "name": b["name"]})


def datasources(records: list[dict]) -> dict[str, list]:
    """Data sources (seed 004), so analysts find one by name or externalId."""
    return _rows(records, "datasource", lambda r, b: {
        "datasource_id": r["id"], "name": b["name"], "external_id": _text(b.get("externalId")),
        "description": _text(b.get("description"))})


TABLES = {"metric_definitions": metric_definitions, "thing_types": thing_types, "things": things,
          "places": places, "datasources": datasources}
