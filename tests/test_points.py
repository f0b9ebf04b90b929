"""The harbor rulebook (seed 003's tall points) as a pure function: ISO times, ships and
cargos resolved through the harbor by derived ids, provisioning, and its errors."""

import orjson
import pytest

from schemas import frames
from catalog.harbors import cargo_metric_id, ship_thing_id
from processors.points import points

ORG, HARBOR = "org_a", "hbr_1"
SEED_POINT = {"time": "2024-06-20T12:00:00Z", "ship_id": "Truck1", "cargo_id": "temperature", "value": 21.5}


def envelope(body) -> dict:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return {"request_id": "req_1", "org_id": ORG, "route": "harbor_points", "stream": HARBOR,
            "received_at": 1718884800999, "body": raw}


def catalog(auto: bool, ships=(), cargos=()) -> dict:
    entities = {("place", HARBOR): {"id": HARBOR, "kind": "harbor", "autoProvision": auto}}
    entities.update({("thing", ship_thing_id(ORG, HARBOR, s)): {"shipId": s} for s in ships})
    entities.update({("metric", cargo_metric_id(ORG, HARBOR, c)): {"cargoId": c} for c in cargos})
    return entities


def run(body, entities):
    return points(envelope(body), lambda kind, entity_id, org: entities.get((kind, entity_id)) if org == ORG else None)


def test_a_single_point_becomes_one_reading_of_its_ship():
    outcome = run(SEED_POINT, catalog(False, ["Truck1"], ["temperature"]))
    assert outcome.verdict["http_status"] == 200 and outcome.verdict["metrics"] == ["temperature"]
    assert outcome.catalog == []
    [batch] = outcome.frames
    assert batch["thing_id"] == ship_thing_id(ORG, HARBOR, "Truck1") and batch["version"] == 1718884800999
    assert batch["readings"]["ts"] == [1718884800000]
    assert batch["readings"]["metric_id"] == [cargo_metric_id(ORG, HARBOR, "temperature")]
    assert batch["readings"]["value"] == [21.5] and batch["readings"]["data_type"] == ["Double"]
    frames.encode(batch)  # what the frames topic carries


def test_a_batch_spans_ships_one_frame_batch_each():
    body = [SEED_POINT, {**SEED_POINT, "ship_id": "Truck2", "value": 3},
            {**SEED_POINT, "cargo_id": "speed", "time": "2024-06-20T14:00:00+02:00", "value": "7.25"}]
    outcome = run(body, catalog(False, ["Truck1", "Truck2"], ["temperature", "speed"]))
    assert outcome.verdict["frames_ingested"] == 3
    by_thing = {b["thing_id"]: b["readings"] for b in outcome.frames}
    truck1 = by_thing[ship_thing_id(ORG, HARBOR, "Truck1")]
    assert truck1["value"] == [21.5, 7.25] and truck1["ts"] == [1718884800000, 1718884800000]  # +02:00 applied
    assert by_thing[ship_thing_id(ORG, HARBOR, "Truck2")]["value"] == [3.0]



def test_every_column_of_every_reading():
    body = [SEED_POINT, {**SEED_POINT, "cargo_id": "speed", "value": "7.25"},
            {**SEED_POINT, "ship_id": "Truck2", "value": 3},
            {**SEED_POINT, "time": "2024-06-20T12:00:01Z", "value": -1.5}]
    outcome = run(body, catalog(False, ["Truck1", "Truck2"], ["temperature", "speed"]))
    temperature, speed = cargo_metric_id(ORG, HARBOR, "temperature"), cargo_metric_id(ORG, HARBOR, "speed")
    by_thing = {b["thing_id"]: list(zip(*(b["readings"][name] for name in frames.READINGS.names)))
                for b in outcome.frames}
    # (ts, metric_id, data_type, value, value_long, value_string), cargo by cargo in order of first value.
    assert by_thing == {
        ship_thing_id(ORG, HARBOR, "Truck1"): [(1718884800000, temperature, "Double", 21.5, 0, ""),
                                               (1718884801000, temperature, "Double", -1.5, 0, ""),
                                               (1718884800000, speed, "Double", 7.25, 0, "")],
        ship_thing_id(ORG, HARBOR, "Truck2"): [(1718884800000, temperature, "Double", 3.0, 0, "")]}
    assert [b["frames"] for b in outcome.frames] == [3, 1]


def test_auto_provisioning_lists_each_new_ship_and_cargo_once():
    body = [SEED_POINT, {**SEED_POINT, "time": "2024-06-20T12:01:00Z"}, {**SEED_POINT, "cargo_id": "speed"}]
    outcome = run(body, catalog(True, [], ["temperature"]))
    assert outcome.verdict["http_status"] == 200
    assert [(e["kind"], e["id"]) for e in outcome.catalog] == [
        ("thing", ship_thing_id(ORG, HARBOR, "Truck1")), ("metric", cargo_metric_id(ORG, HARBOR, "speed"))]
    thing, metric = outcome.catalog[0]["body"], outcome.catalog[1]["body"]
    assert thing["placeId"] == HARBOR and thing["thingName"] == "Truck1" and thing["thingTypeVersionId"] is None
    assert metric["name"] == "speed" and metric["dataType"] == "Double" and metric["harborId"] == HARBOR


def test_derived_ids_name_the_same_entity_everywhere_and_differ_by_harbor_and_org():
    assert ship_thing_id(ORG, HARBOR, "Truck1") == ship_thing_id(ORG, HARBOR, "Truck1")
    assert ship_thing_id(ORG, HARBOR, "Truck1").startswith("thg_")
    assert len({ship_thing_id(ORG, HARBOR, "Truck1"), ship_thing_id(ORG, "hbr_2", "Truck1"),
                ship_thing_id("org_b", HARBOR, "Truck1"), ship_thing_id(ORG, HARBOR, "truck1")}) == 4
    assert cargo_metric_id(ORG, HARBOR, "Truck1") != ship_thing_id(ORG, HARBOR, "Truck1")[4:]


@pytest.mark.parametrize("body,auto,code,field,named", [
    (SEED_POINT, False, "UNKNOWN_SHIP", "ship_id", "Truck1"),
    ([SEED_POINT, {**SEED_POINT, "cargo_id": "rpm"}], False, "UNKNOWN_CARGO", "[1].cargo_id", "rpm"),
    ({**SEED_POINT, "time": "yesterday"}, True, "INVALID_TIMESTAMP", "time", "yesterday"),
    ([SEED_POINT, {**SEED_POINT, "time": 1718884800000}], True, "INVALID_TIMESTAMP", "[1].time", "1718884800000"),
    ({**SEED_POINT, "time": "1969-12-31T23:59:59Z"}, True, "INVALID_TIMESTAMP", "time", "1969"),
    ([{**SEED_POINT, "value": "high"}], True, "INVALID_VALUE", "[0].value", "high"),
    ({**SEED_POINT, "value": True}, True, "INVALID_VALUE", "value", "boolean"),
    ({**SEED_POINT, "ship_id": ""}, True, "INVALID_PAYLOAD", "ship_id", "ship_id"),
    ([SEED_POINT, 7], True, "INVALID_PAYLOAD", "[1]", "object"),
    ([], True, "INVALID_PAYLOAD", "body", "non-empty"),
    (b"[{", True, "INVALID_PAYLOAD", "body", "JSON"),
])
def test_errors_name_the_field(body, auto, code, field, named):
    outcome = run(body, catalog(auto, ["Truck1"] if code != "UNKNOWN_SHIP" else [], ["temperature"]))
    error = outcome.verdict["errors"][0]
    assert (outcome.verdict["http_status"], error["code"], error["field"]) == (400, code, field)
    assert named in error["message"]
    assert outcome.frames == [] and outcome.catalog == []  # a request is judged whole
    assert outcome.dead_letters[0]["reason"] == code


def test_another_orgs_harbor_is_not_found():
    outcome = points({**envelope(SEED_POINT), "org_id": "org_b"}, lambda kind, entity_id, org: None)
    assert outcome.verdict["http_status"] == 404 and outcome.verdict["errors"][0]["code"] == "HARBOR_NOT_FOUND"
