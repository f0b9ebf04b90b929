"""Frames → readings and locations rows: pure functions from decoded frame batches to columns."""

from __future__ import annotations

COLUMNS = ("org_id", "thing_id", "metric_id", "ts", "data_type", "value", "value_long",
           "value_string", "type_version_id", "request_id", "version")


def readings_columns(batches: list[dict]) -> dict[str, list]:
    """Flatten frame batches into one list per readings column (the insert's shape)."""
    org, thing, metric, ts, dtype, value, along, astr, tver, req, ver = ([] for _ in COLUMNS)
    for batch in batches:
        b_org, b_thing, b_tver = batch["org_id"], batch["thing_id"], batch["type_version_id"]
        b_req, b_ver = batch["request_id"], batch["version"]
        for frame in batch["frames"]:
            frame_ts = frame["ts"]
            for v in frame["values"]:
                org.append(b_org)
                thing.append(b_thing)
                metric.append(v["metric_id"])
                ts.append(frame_ts)
                dtype.append(v["data_type"])
                value.append(v["value"])
                along.append(v["value_long"])
                astr.append(v["value_string"])
                tver.append(b_tver)
                req.append(b_req)
                ver.append(b_ver)
    return dict(zip(COLUMNS, (org, thing, metric, ts, dtype, value, along, astr, tver, req, ver)))


LOCATION_COLUMNS = ("org_id", "thing_id", "ts", "latitude", "longitude", "accuracy_m", "request_id", "version")


def locations_columns(batches: list[dict]) -> dict[str, list]:
    """One locations row per frame that carries a location."""
    columns: dict[str, list] = {name: [] for name in LOCATION_COLUMNS}
    for batch in batches:
        for frame in batch["frames"]:
            where = frame.get("location")
            if where is None:
                continue
            columns["org_id"].append(batch["org_id"])
            columns["thing_id"].append(batch["thing_id"])
            columns["ts"].append(frame["ts"])
            columns["latitude"].append(where["latitude"])
            columns["longitude"].append(where["longitude"])
            columns["accuracy_m"].append(where["accuracy_m"])
            columns["request_id"].append(batch["request_id"])
            columns["version"].append(batch["version"])
    return columns
