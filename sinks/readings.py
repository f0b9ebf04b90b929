"""Frames → readings and locations rows: pure functions from decoded frame batches to columns."""

from __future__ import annotations

COLUMNS = ("org_id", "thing_id", "metric_id", "ts", "data_type", "value", "value_long",
           "value_string", "type_version_id", "request_id", "version")


def readings_columns(batches: list[dict]) -> dict[str, list]:
    """Concatenate frame batches' readings columns, repeating each batch's own fields."""
    columns: dict[str, list] = {name: [] for name in COLUMNS}
    for batch in batches:
        readings = batch["readings"]
        n = len(readings["ts"])
        for name in ("ts", "metric_id", "data_type", "value", "value_long", "value_string"):
            columns[name].extend(readings[name])
        for name in ("org_id", "thing_id", "type_version_id", "request_id", "version"):
            columns[name].extend([batch[name]] * n)
    return columns


LOCATION_COLUMNS = ("org_id", "thing_id", "ts", "latitude", "longitude", "accuracy_m", "request_id", "version")


def locations_columns(batches: list[dict]) -> dict[str, list]:
    """One locations row per frame that carried a location."""
    columns: dict[str, list] = {name: [] for name in LOCATION_COLUMNS}
    for batch in batches:
        for where in batch["locations"]:
            for name in ("ts", "latitude", "longitude", "accuracy_m"):
                columns[name].append(where[name])
            for name in ("org_id", "thing_id", "request_id", "version"):
                columns[name].append(batch[name])
    return columns
