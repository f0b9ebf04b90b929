"""The processors' rulebook as a pure function: name resolution and coercion."""

import orjson
import pytest

from schemas import frames
from catalog.coercion import CoercionError, coerce
from catalog.resolution import build_table
from processors.normalize import normalize

METRICS = {
    "mdef_status": {"name": "status", "dataType": "Long"},
    "mdef_soc": {"name": "moduleSoC", "dataType": "Double"},
    "mdef_on": {"name": "enabled", "dataType": "Boolean"},
    "mdef_mode": {"name": "mode", "dataType": "String", "enumValues": ["idle", "charging"]},
}
TABLE = build_table(list(METRICS), METRICS)
THING = {"id": "thg_1", "thingTypeVersionId": "tdef_1"}


def envelope(body: dict | bytes) -> dict:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return {"request_id": "req_1", "org_id": "org_a", "route": "thing_data", "thing_id": "thg_1",
            "received_at": 1718884800999, "body": raw}


def run(body, thing=THING):
    return normalize(envelope(body), lambda org, tid: thing, lambda v: TABLE if v == "tdef_1" else None)



def rows(readings: dict[str, list]) -> list[tuple]:
    return list(zip(*(readings[name] for name in frames.READINGS.names)))


def test_every_column_of_every_reading():
    # Each data type, a Double given as an integer and as a string, two spellings of one metric.
    outcome = run({"frames": [
        {"timestamp": 1000, "metrics": {"moduleSoC": 87.4, "status": "12", "enabled": True, "mode": "idle"}},
        {"timestamp": 2000, "metrics": {"MODULESOC": 88, "status": 13.0, "enabled": "off"}},
        {"timestamp": 3000, "location": {"latitude": 1.5, "longitude": 2}},
        {"timestamp": 4000, "metrics": {"modulesoc": "86.5", "mode": "charging"}}]})
    [batch] = outcome.frames
    # (ts, metric_id, data_type, value, value_long, value_string), metric by metric in order of first value.
    assert rows(batch["readings"]) == [
        (1000, "mdef_soc", "Double", 87.4, 0, ""),
        (2000, "mdef_soc", "Double", 88.0, 0, ""),
        (4000, "mdef_soc", "Double", 86.5, 0, ""),
        (1000, "mdef_status", "Long", 12.0, 12, ""),
        (2000, "mdef_status", "Long", 13.0, 13, ""),
        (1000, "mdef_on", "Boolean", 1.0, 1, ""),
        (2000, "mdef_on", "Boolean", 0.0, 0, ""),
        (1000, "mdef_mode", "String", 0.0, 0, "idle"),
        (4000, "mdef_mode", "String", 0.0, 0, "charging")]
    assert [type(v) for v in batch["readings"]["value"]] == [float] * 9
    assert batch["locations"] == [{"latitude": 1.5, "longitude": 2.0, "accuracy_m": None, "ts": 3000}]
    assert outcome.verdict["metrics"] == ["moduleSoC", "status", "enabled", "mode"] and batch["frames"] == 4
    frames.encode(batch)  # what the frames topic carries


def test_names_resolve_case_insensitively_to_ids():
    outcome = run({"frames": [{"timestamp": 1718884800000, "metrics": {"STATUS": 1, "modulesoc": 87.4}}]})
    readings = outcome.frames[0]["readings"]
    assert readings["metric_id"] == ["mdef_status", "mdef_soc"]
    assert readings["ts"] == [1718884800000, 1718884800000] and readings["data_type"] == ["Long", "Double"]
    assert readings["value_long"][0] == 1 and readings["value"][1] == 87.4
    assert outcome.verdict["http_status"] == 200
    assert outcome.verdict["metrics"] == ["status", "moduleSoC"]  # canonical spellings
    assert outcome.frames[0]["version"] == 1718884800999


def test_unknown_metric_is_rejected_naming_it():
    outcome = run({"frames": [{"timestamp": 1, "metrics": {"status": 1, "bogus": 2}}]})
    assert outcome.frames == []
    error = outcome.verdict["errors"][0]
    assert outcome.verdict["http_status"] == 400 and error["code"] == "UNKNOWN_METRIC"
    assert "bogus" in error["message"] and error["field"] == "frames[0].metrics.bogus"
    assert outcome.dead_letters[0]["original"] == envelope({"frames": [{"timestamp": 1, "metrics": {
        "status": 1, "bogus": 2}}]})["body"]


def test_uncoercible_value_names_metric_frame_and_value():
    outcome = run({"frames": [{"timestamp": 1, "metrics": {"status": 1}},
                              {"timestamp": 2, "metrics": {"moduleSoC": "high"}}]})
    error = outcome.verdict["errors"][0]
    assert error["code"] == "INVALID_VALUE" and error["field"] == "frames[1].metrics.moduleSoC"
    assert "'high'" in error["message"] and "frame 1" in error["message"]


@pytest.mark.parametrize("body", [{"frames": []}, {"nope": 1}, b"{not json", {"frames": [{"timestamp": 1}]}])
def test_empty_or_malformed_bodies_are_400(body):
    assert run(body).verdict["http_status"] == 400


def test_thing_without_type_is_424():
    outcome = run({"frames": [{"timestamp": 1, "metrics": {"status": 1}}]}, thing={"id": "thg_1"})
    assert outcome.verdict["http_status"] == 424


@pytest.mark.parametrize("ts", [-1, 10**15, "1718884800000", 1.5])
def test_absurd_timestamps_are_rejected(ts):
    assert run({"frames": [{"timestamp": ts, "metrics": {"status": 1}}]}).verdict["errors"][0][
        "code"] == "INVALID_TIMESTAMP"


@pytest.mark.parametrize("data_type,value,expected", [
    ("Double", 1, (1.0, 0, "")),
    ("Double", "2.5", (2.5, 0, "")),
    ("Long", 2**60, (float(2**60), 2**60, "")),
    ("Long", 3.0, (3.0, 3, "")),
    ("Boolean", True, (1.0, 1, "")),
    ("Boolean", "false", (0.0, 0, "")),
    ("String", "x", (0.0, 0, "x")),
    ("String", 12, (0.0, 0, "12")),
])
def test_coercion(data_type, value, expected):
    assert coerce(data_type, value) == expected


@pytest.mark.parametrize("data_type,value", [
    ("Double", True), ("Double", None), ("Double", [1]), ("Long", 1.5), ("Long", 2**64),
    ("Boolean", 2), ("String", {"a": 1}),
])
def test_coercion_refuses(data_type, value):
    with pytest.raises(CoercionError):
        coerce(data_type, value)


def test_enum_values_are_enforced():
    assert coerce("String", "idle", frozenset({"idle"}))[2] == "idle"
    with pytest.raises(CoercionError, match="not one of"):
        coerce("String", "off", frozenset({"idle"}))


def test_locations_are_range_checked_and_may_stand_alone():
    frames = [{"timestamp": 1, "location": {"latitude": 55.67, "longitude": 12.56, "accuracyRadius": 8}},
              {"timestamp": 2, "metrics": {"status": 1}, "location": {"latitude": -90, "longitude": 180}}]
    outcome = run({"frames": frames})
    assert outcome.frames[0]["locations"] == [
        {"ts": 1, "latitude": 55.67, "longitude": 12.56, "accuracy_m": 8.0},
        {"ts": 2, "latitude": -90.0, "longitude": 180.0, "accuracy_m": None}]
    assert outcome.frames[0]["readings"]["ts"] == [2] and outcome.frames[0]["frames"] == 2


@pytest.mark.parametrize("location,field", [
    ({"latitude": 91, "longitude": 0}, "frames[0].location.latitude"),
    ({"latitude": 0, "longitude": -180.5}, "frames[0].location.longitude"),
    ({"latitude": 0, "longitude": 0, "accuracyRadius": -1}, "frames[0].location.accuracyRadius"),
    ({"latitude": "55", "longitude": 0}, "frames[0].location.latitude"),
    ([55, 12], "frames[0].location"),
])
def test_bad_locations_name_the_field(location, field):
    error = run({"frames": [{"timestamp": 1, "location": location}]}).verdict["errors"][0]
    assert error["code"] == "INVALID_LOCATION" and error["field"] == field
