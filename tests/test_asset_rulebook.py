"""The asset rulebook (seed 000's Data Ingest API) as a pure function: ISO 15143-3 insights
resolved through the org's preset, sensors through the asset's type, locations, times,
and the errors that name what they refuse."""

import orjson
import pytest

from schemas import frames
from catalog.presets import ISO_15143_3, insight_metric_id, preset_type_id
from processors.assets import asset_batch, asset_data
from processors.rulebooks import judge

ORG, ASSET, VERSION, SENSOR = "org_a", "thg_excavator", "tdef_1", "mdef_hydraulic"
# The docs' example body (docs/asset-telemetry.md), with the sensor id of this catalog.
EXAMPLE = {
    "machineInsights": [
        {"time": "2024-06-20T12:00:00Z", "name": "CumulativeOperatingHours", "value": 1520.5},
        {"time": "2024-06-20T12:00:00Z", "name": "FuelRemaining", "value": 64},
        {"time": "2024-06-20T12:00:00Z", "name": "EngineRunning", "value": True},
    ],
    "locations": [{"time": "2024-06-20T12:00:00Z", "latitude": 55.6761, "longitude": 12.5683, "accuracyRadius": 8}],
    "advancedSensors": [{"time": "2024-06-20T12:00:00Z", "sensorId": SENSOR, "value": 182.4}],
}
T0 = 1718884800000


def envelope(body) -> dict:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return {"request_id": "req_1", "org_id": ORG, "route": "asset_data", "thing_id": ASSET,
            "received_at": T0 + 999, "body": raw}


def catalog(preset: bool = True, sensors=(SENSOR,)) -> dict:
    entities = {("thing", ASSET): {"id": ASSET, "thingTypeVersionId": VERSION},
                ("thing_type_version", VERSION): {"id": VERSION, "metricIds": list(sensors)},
                ("metric", SENSOR): {"id": SENSOR, "name": "hydraulicPressure", "dataType": "Double"}}
    if preset:
        for insight in ISO_15143_3.insights:
            metric_id = insight_metric_id(ORG, ISO_15143_3.name, insight.name)
            entities[("metric", metric_id)] = {"id": metric_id, "name": insight.name, "dataType": insight.data_type}
    return entities


def run(body, entities=None):
    entities = catalog() if entities is None else entities
    return asset_data(envelope(body), lambda kind, entity_id, org: entities.get((kind, entity_id))
                      if org == ORG else None)


def error(outcome) -> tuple:
    first = outcome.verdict["errors"][0]
    return outcome.verdict["http_status"], first["code"], first["field"]


def test_the_example_becomes_readings_and_a_location_of_the_asset():
    outcome = run(EXAMPLE)
    assert outcome.verdict["http_status"] == 200 and outcome.verdict["frames_ingested"] == 5
    assert outcome.verdict["metrics"] == ["CumulativeOperatingHours", "FuelRemaining", "EngineRunning",
                                          "hydraulicPressure"]
    [batch] = outcome.frames
    assert batch["thing_id"] == ASSET and batch["type_version_id"] == VERSION and batch["version"] == T0 + 999
    readings = batch["readings"]
    assert readings["ts"] == [T0] * 4
    assert readings["metric_id"] == [insight_metric_id(ORG, "iso15143-3", n) for n in
                                     ("CumulativeOperatingHours", "FuelRemaining", "EngineRunning")] + [SENSOR]
    assert readings["data_type"] == ["Double", "Double", "Boolean", "Double"]
    assert readings["value"] == [1520.5, 64.0, 1.0, 182.4] and readings["value_long"][2] == 1
    assert batch["locations"] == [{"ts": T0, "latitude": 55.6761, "longitude": 12.5683, "accuracy_m": 8.0}]
    frames.encode(batch)  # what the frames topic carries



def test_every_column_of_every_reading():
    outcome = run({**EXAMPLE, "machineInsights": EXAMPLE["machineInsights"] + [
        {"time": T0 + 1000, "name": "CumulativeOperatingHours", "value": "1521"},
        {"time": T0, "name": "CumulativeLoadCount", "value": 12},
        {"time": T0, "name": "FaultCode", "value": "SPN 100 FMI 1"}],
        "advancedSensors": EXAMPLE["advancedSensors"] + [{"time": T0 + 1000, "sensorId": SENSOR, "value": 183}]})
    [batch] = outcome.frames
    insight = {n: insight_metric_id(ORG, "iso15143-3", n) for n in
               ("CumulativeOperatingHours", "FuelRemaining", "EngineRunning", "CumulativeLoadCount", "FaultCode")}
    # (ts, metric_id, data_type, value, value_long, value_string), metric by metric in order of first value.
    assert list(zip(*(batch["readings"][name] for name in frames.READINGS.names))) == [
        (T0, insight["CumulativeOperatingHours"], "Double", 1520.5, 0, ""),
        (T0 + 1000, insight["CumulativeOperatingHours"], "Double", 1521.0, 0, ""),
        (T0, insight["FuelRemaining"], "Double", 64.0, 0, ""),
        (T0, insight["EngineRunning"], "Boolean", 1.0, 1, ""),
        (T0, insight["CumulativeLoadCount"], "Long", 12.0, 12, ""),
        (T0, insight["FaultCode"], "String", 0.0, 0, "SPN 100 FMI 1"),
        (T0, SENSOR, "Double", 182.4, 0, ""),
        (T0 + 1000, SENSOR, "Double", 183.0, 0, "")]
    assert batch["frames"] == 9 and batch["locations"][0]["ts"] == T0  # eight readings and a location


def test_the_route_has_its_rulebook():
    entities = catalog()
    outcome = judge(envelope(EXAMPLE), type("View", (), {
        "get": lambda self, kind, entity_id, org=None: entities.get((kind, entity_id)),
        "resolution": lambda self, version: None})())
    assert outcome.verdict["http_status"] == 200


def test_insight_names_are_case_insensitive_and_times_may_be_epoch_ms_or_offset():
    outcome = run({"machineInsights": [
        {"time": T0 - 86_400_000, "name": "cumulativeoperatinghours", "value": "1500"},
        {"time": "2024-06-20T14:00:00+02:00", "name": "CUMULATIVELOADCOUNT", "value": 12},
        {"time": "2024-06-20T12:00:00", "name": "FaultCode", "value": "SPN 100 FMI 1"}]})
    [batch] = outcome.frames
    assert batch["readings"]["ts"] == [T0 - 86_400_000, T0, T0]  # historical points keep their event time
    assert batch["readings"]["value"][0] == 1500.0 and batch["readings"]["value_long"][1] == 12
    assert batch["readings"]["value_string"][2] == "SPN 100 FMI 1"
    assert outcome.verdict["metrics"] == ["CumulativeOperatingHours", "CumulativeLoadCount", "FaultCode"]


def test_a_location_only_request_writes_no_reading():
    outcome = run({"locations": [{"time": T0, "latitude": -33.9, "longitude": 151.2}]})
    [batch] = outcome.frames
    assert batch["readings"]["ts"] == [] and batch["locations"][0]["accuracy_m"] is None


def test_an_unknown_sensor_is_named():
    outcome = run({"advancedSensors": [EXAMPLE["advancedSensors"][0],
                                       {"time": T0, "sensorId": "mdef_nope", "value": 1}]})
    assert error(outcome) == (400, "UNKNOWN_SENSOR", "advancedSensors[1].sensorId")
    assert "'mdef_nope'" in outcome.verdict["errors"][0]["message"] and outcome.frames == []
    # a metric of the org that is not on the asset's type is not one of its sensors
    outcome = run(EXAMPLE, catalog(sensors=()))
    assert error(outcome)[1] == "UNKNOWN_SENSOR" and f"'{SENSOR}'" in outcome.verdict["errors"][0]["message"]


@pytest.mark.parametrize("body,expected", [
    ({"machineInsights": [{"time": T0, "name": "WarpFactor", "value": 9}]},
     (400, "UNKNOWN_MACHINE_INSIGHT", "machineInsights[0].name")),
    ({"machineInsights": [{"time": T0, "name": "FuelRemaining", "value": "full"}]},
     (400, "INVALID_VALUE", "machineInsights[0].value")),
    ({"machineInsights": [{"time": "yesterday", "name": "FuelRemaining", "value": 1}]},
     (400, "INVALID_TIMESTAMP", "machineInsights[0].time")),
    ({"locations": [{"time": T0, "latitude": 91, "longitude": 0}]},
     (400, "INVALID_LOCATION", "locations[0].latitude")),
    ({"locations": [{"time": -1, "latitude": 1, "longitude": 0}]}, (400, "INVALID_TIMESTAMP", "locations[0].time")),
    ({"advancedSensors": [{"time": T0, "sensorId": SENSOR, "value": None}]},
     (400, "INVALID_VALUE", "advancedSensors[0].value")),
    ({"advancedSensors": [["not", "an", "object"]]}, (400, "INVALID_PAYLOAD", "advancedSensors[0]")),
    ({"machineInsight": []}, (400, "INVALID_PAYLOAD", "machineInsight")),
    ({"locations": {}}, (400, "INVALID_PAYLOAD", "locations")),
    ({"locations": []}, (400, "INVALID_PAYLOAD", "body")),
    (b"[1]", (400, "INVALID_PAYLOAD", "body")),
])
def test_bad_entries_are_refused_naming_the_field(body, expected):
    outcome = run(body)
    assert error(outcome) == expected and outcome.frames == []
    assert outcome.dead_letters[0]["reason"] == expected[1]


def test_insights_need_the_preset_and_the_asset_must_exist():
    assert error(run(EXAMPLE, catalog(preset=False))) == (424, "PRESET_NOT_INSTALLED", "machineInsights[0].name")
    entities = catalog()
    del entities[("thing", ASSET)]
    assert error(run(EXAMPLE, entities)) == (404, "ASSET_NOT_FOUND", "assetId")


def test_preset_ids_are_derived_per_org():
    assert insight_metric_id("org_a", "iso15143-3", "FuelUsed") == insight_metric_id("org_a", "iso15143-3", "FuelUsed")
    assert insight_metric_id("org_a", "iso15143-3", "FuelUsed") != insight_metric_id("org_b", "iso15143-3", "FuelUsed")
    assert preset_type_id("org_a", "iso15143-3").startswith("tdefi_")


OTHER = "thg_loader"


def run_batch(body, entities=None):
    entities = catalog() if entities is None else entities
    entities.setdefault(("thing", OTHER), {"id": OTHER, "thingTypeVersionId": None})
    return asset_batch({**envelope(body), "route": "asset_batch", "thing_id": None},
                       lambda kind, entity_id, org: entities.get((kind, entity_id)) if org == ORG else None)


def test_a_batch_writes_one_frame_batch_per_asset():
    outcome = run_batch({"assets": [{"assetId": ASSET, **EXAMPLE},
                                    {"assetId": OTHER, "locations": [{"time": T0, "latitude": 1, "longitude": 2}]}]})
    assert outcome.verdict["http_status"] == 200 and outcome.verdict["frames_ingested"] == 6
    first, second = outcome.frames
    assert (first["thing_id"], second["thing_id"]) == (ASSET, OTHER)
    assert len(first["readings"]["ts"]) == 4 and first["frames"] == 5
    assert second["readings"]["ts"] == [] and second["locations"][0]["latitude"] == 1.0
    assert second["type_version_id"] == ""
    for batch in outcome.frames:
        frames.encode(batch)


@pytest.mark.parametrize("body,expected", [
    ({"assets": []}, (400, "INVALID_PAYLOAD", "assets")),
    ({"assets": [{"locations": [{"time": T0, "latitude": 1, "longitude": 2}]}]},
     (400, "INVALID_PAYLOAD", "assets[0].assetId")),
    ({"assets": [{"assetId": ASSET, **EXAMPLE}, {"assetId": "thg_gone", **EXAMPLE}]},
     (404, "ASSET_NOT_FOUND", "assets[1].assetId")),
    ({"assets": [{"assetId": ASSET, **EXAMPLE}, {"assetId": OTHER, **EXAMPLE}]},  # OTHER has no type: no sensors
     (400, "UNKNOWN_SENSOR", "assets[1].advancedSensors[0].sensorId")),
    ({"assets": [{"assetId": OTHER}]}, (400, "INVALID_PAYLOAD", "assets[0]")),
])
def test_a_batch_is_judged_whole_naming_the_asset(body, expected):
    outcome = run_batch(body)
    assert error(outcome) == expected and outcome.frames == []
