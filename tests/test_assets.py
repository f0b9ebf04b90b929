"""Seed 000's asset data on the real stack: the docs' example bodies answer as documented
and land as readings and locations (ClickHouse, latest-event); the ISO 15143-3 preset
installs once however often it runs; an unknown sensor is named; an asset the key cannot
see is not found; historical points land at their event time."""

from __future__ import annotations

import httpx
import pytest

from sluice.cli import main as sluice
from tests.conftest import eventually

SYNC = {"Prefer": "wait=15"}
T0 = 1718884800000  # 2024-06-20T12:00:00Z


def example(sensor_id: str) -> dict:
    """The docs' example body (docs/asset-telemetry.md), with this org's sensor id."""
    return {
        "machineInsights": [
            {"time": "2024-06-20T12:00:00Z", "name": "CumulativeOperatingHours", "value": 1520.5},
            {"time": "2024-06-20T12:00:00Z", "name": "FuelRemaining", "value": 64},
            {"time": "2024-06-20T12:00:00Z", "name": "EngineRunning", "value": True},
        ],
        "locations": [{"time": "2024-06-20T12:00:00Z", "latitude": 55.6761, "longitude": 12.5683,
                       "accuracyRadius": 8}],
        "advancedSensors": [{"time": "2024-06-20T12:00:00Z", "sensorId": sensor_id, "value": 182.4}],
    }


class Fleet:
    """An org of its own with the preset installed, a site, a hydraulic-pressure sensor on the
    ISO machine type, and a client holding the org's admin key."""

    def __init__(self, stack, platform: httpx.Client):
        reply = platform.post("/v2/orgs", json={"name": "Asset fleet"})
        assert reply.status_code == 201, reply.text
        self.org_id = reply.json()["id"]
        self.client = httpx.Client(base_url=stack.url, headers={"X-Api-Key": reply.json()["adminKey"]["key"]},
                                   timeout=30)
        self.first_install = self.client.post("/v2/definitions/presets/iso15143-3")
        self.preset = self.first_install.json()
        self.sensor = self.client.post("/v2/definitions/metrics", json={
            "name": "hydraulicPressure", "dataType": "Double", "defaultAggregation": "Avg",
            "unitLabel": "bar"}).json()["id"]
        version = self.client.post(f"/v2/definitions/thing-types/{self.preset['thingTypeId']}/versions", json={
            "metricIds": [m["id"] for m in self.preset["metrics"]] + [self.sensor]})
        assert version.status_code == 201, version.text
        self.site = self.client.post("/v2/sites", json={"name": "Quarry North"}).json()["id"]

    def asset(self, name: str = "Excavator 7", site: str | None = None) -> str:
        reply = self.client.post(f"/v2/sites/{site or self.site}/things", json={
            "thingName": name, "thingTypeId": self.preset["thingTypeId"]})
        assert reply.status_code == 201, reply.text
        return reply.json()["id"]


@pytest.fixture(scope="module")
def fleet(stack) -> Fleet:
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": stack.settings.admin_key}, timeout=30) as platform:
        made = Fleet(stack, platform)
    yield made
    made.client.close()


def rows(api, stack, sql: str) -> list:
    reply = api.post("/v2/admin/sql", json={"sql": sql.format(db=stack.settings.database)})
    assert reply.status_code == 200, reply.text
    return reply.json()["rows"]


READINGS = ("SELECT m.name, toUnixTimestamp64Milli(r.ts), r.value FROM {db}.readings AS r "
            "JOIN (SELECT * FROM {db}.metric_definitions ORDER BY updated_at DESC LIMIT 1 BY org_id, metric_id) AS m "
            "USING (org_id, metric_id) WHERE r.thing_id = '%s' "
            "ORDER BY r.ts, m.name, r.version DESC LIMIT 1 BY r.metric_id, r.ts")
LOCATIONS = ("SELECT toUnixTimestamp64Milli(ts), latitude, longitude, accuracy_m FROM {db}.locations "
             "WHERE thing_id = '%s' ORDER BY ts LIMIT 1 BY ts")


def test_the_preset_installs_once_through_the_api_and_the_cli(fleet, stack, capsys):
    assert fleet.first_install.status_code == 201, fleet.first_install.text
    first = fleet.preset
    assert first["preset"] == "iso15143-3" and first["thingTypeId"].startswith("tdefi_")
    by_name = {m["name"]: m for m in first["metrics"]}
    assert {"CumulativeOperatingHours", "CumulativeIdleHours", "FuelUsed", "FuelUsedLast24", "FuelRemaining",
            "DEFRemaining", "Odometer", "EngineRunning", "AverageLoadFactorLast24", "PeakDailySpeed",
            "CumulativeLoadCount", "CumulativePayloadTotals", "CumulativePowerTakeOffHours",
            "FaultCode"} <= set(by_name)
    assert by_name["CumulativeOperatingHours"] | {"id": None} == {
        "id": None, "name": "CumulativeOperatingHours", "dataType": "Double", "defaultAggregation": "Max",
        "unitLabel": "h"}
    assert by_name["EngineRunning"]["dataType"] == "Boolean" and by_name["FaultCode"]["dataType"] == "String"

    again = fleet.client.post("/v2/definitions/presets/iso15143-3")
    assert again.status_code == 200, again.text
    # The same ids; the org's own later version (with its sensor) is kept, not replaced.
    assert again.json()["metrics"] == first["metrics"] and again.json()["created"] == []
    assert again.json()["thingTypeId"] == first["thingTypeId"]
    key = fleet.client.headers["X-Api-Key"]
    assert sluice(["catalog", "preset", "iso15143-3", "--url", stack.url, "--key", key]) == 0
    assert "already installed; nothing changed" in capsys.readouterr().out

    metrics = fleet.client.get("/v2/definitions/metrics", params={"limit": 1000}).json()["items"]
    names = [m["name"] for m in metrics]
    assert len(names) == len(set(names)) == len(first["metrics"]) + 1  # the preset's, and the org's sensor
    types = fleet.client.get("/v2/definitions/thing-types").json()["items"]
    assert [(t["displayName"], t["version"]) for t in types] == [("ISO 15143-3 machine", 2)]
    assert fleet.client.post("/v2/definitions/presets/iso-nope").status_code == 404


def test_the_example_body_lands_as_readings_and_a_location(fleet, api, stack):
    asset = fleet.asset()
    reply = fleet.client.post(f"/v1/assets/{asset}/data", json=example(fleet.sensor), headers=SYNC)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"requestId": reply.headers["X-Request-Id"], "assetId": asset, "status": "ingested",
                            "machineInsights": 3, "locations": 1, "advancedSensors": 1}
    expected = [["CumulativeOperatingHours", T0, 1520.5], ["EngineRunning", T0, 1.0], ["FuelRemaining", T0, 64.0],
                ["hydraulicPressure", T0, 182.4]]
    eventually(lambda: rows(api, stack, READINGS % asset) == expected)
    assert rows(api, stack, LOCATIONS % asset) == [[T0, 55.6761, 12.5683, 8.0]]
    latest = fleet.client.get(f"/v2/things/{asset}/latest-event").json()
    assert latest["metrics"] == {"CumulativeOperatingHours": 1520.5, "EngineRunning": True, "FuelRemaining": 64.0,
                                 "hydraulicPressure": 182.4}
    assert latest["metrics"]["EngineRunning"] is True
    units = {r["metric"]: r["unit"] for r in latest["readings"]}
    assert units["CumulativeOperatingHours"] == "h" and units["hydraulicPressure"] == "bar"

    # Without a wait: 202 once durable, with the documented body; the verdict follows in the ingest log.
    reply = fleet.client.post(f"/v1/assets/{asset}/data", json={"locations": [
        {"time": "2024-06-20T12:05:00Z", "latitude": 55.68, "longitude": 12.57}]})
    assert reply.status_code == 202, reply.text
    assert reply.json() == {"requestId": reply.headers["X-Request-Id"], "assetId": asset, "status": "accepted",
                            "machineInsights": 0, "locations": 1, "advancedSensors": 0}
    eventually(lambda: rows(api, stack, LOCATIONS % asset)[-1:] == [[T0 + 300_000, 55.68, 12.57, None]])


def test_historical_points_land_at_their_event_time(fleet, api, stack):
    asset = fleet.asset("Dozer 2")
    hours = lambda t, v: {"machineInsights": [{"time": t, "name": "CumulativeOperatingHours", "value": v}]}
    assert fleet.client.post(f"/v1/assets/{asset}/data", json=hours(T0, 1500), headers=SYNC).status_code == 200
    # A backfill of the day before, sent afterwards, in epoch ms and ISO 8601 with an offset.
    backfill = {"machineInsights": [
        {"time": T0 - 86_400_000, "name": "CumulativeOperatingHours", "value": 1490},
        {"time": "2024-06-19T20:00:00+02:00", "name": "CumulativeOperatingHours", "value": 1494}]}
    assert fleet.client.post(f"/v1/assets/{asset}/data", json=backfill, headers=SYNC).status_code == 200
    eventually(lambda: rows(api, stack, READINGS % asset) == [
        ["CumulativeOperatingHours", T0 - 86_400_000, 1490.0], ["CumulativeOperatingHours", T0 - 18 * 3_600_000, 1494.0],
        ["CumulativeOperatingHours", T0, 1500.0]])
    latest = fleet.client.get(f"/v2/things/{asset}/latest-event").json()
    assert latest["metrics"] == {"CumulativeOperatingHours": 1500.0} and latest["timestamp"] == T0


def test_an_unknown_sensor_is_named_and_nothing_lands(fleet, api, stack):
    asset = fleet.asset("Loader 3")
    body = example(fleet.sensor)
    body["advancedSensors"].append({"time": "2024-06-20T12:00:00Z", "sensorId": "mdef_0000feedbeef", "value": 1})
    reply = fleet.client.post(f"/v1/assets/{asset}/data", json=body, headers=SYNC)
    assert reply.status_code == 400, reply.text
    error = reply.json()
    assert (error["status"], error["code"]) == (400, "unknown_sensor")
    assert "'mdef_0000feedbeef'" in error["message"] and asset in error["message"]
    assert error["violations"] == [{"field": "advancedSensors[1].sensorId", "message": error["message"]}]
    assert error["requestId"] == reply.headers["X-Request-Id"]
    reply = fleet.client.post(f"/v1/assets/{asset}/data", headers=SYNC, json={
        "machineInsights": [{"time": "2024-06-20T12:00:00Z", "name": "WarpFactor", "value": 9}]})
    assert reply.status_code == 400 and reply.json()["code"] == "unknown_machine_insight"
    log = eventually(lambda: (r := fleet.client.get(f"/v2/ingest-log/{reply.headers['X-Request-Id']}"))
                     .status_code == 200 and r.json())
    assert log["status"] == "rejected" and log["errors"][0]["code"] == "UNKNOWN_MACHINE_INSIGHT"
    assert rows(api, stack, READINGS % asset) == []


def test_an_asset_the_key_cannot_see_is_not_found(fleet, api, stack):
    asset = fleet.asset("Crane 1")
    body = example(fleet.sensor)
    missing = fleet.client.post("/v1/assets/thg_doesnotexist/data", json=body)
    assert missing.status_code == 404
    assert missing.json() == {"status": 404, "code": "asset_not_found", "message": "asset 'thg_doesnotexist' not found",
                              "violations": [{"field": "assetId", "message": "asset 'thg_doesnotexist' not found"}]}
    # another org's asset (the platform admin acts in the default org)
    assert api.post(f"/v1/assets/{asset}/data", json=body).json()["code"] == "asset_not_found"
    # a key filtered to another site sees no asset of this one: 404, as if it did not exist
    other_site = fleet.client.post("/v2/sites", json={"name": "Quarry South"}).json()["id"]
    keys = {}
    for name, scopes, filters in (("south", ["write"], {"placeIds": [other_site]}),
                                  ("north reader", ["read"], {"placeIds": [fleet.site]}),
                                  ("north", ["write"], {"placeIds": [fleet.site]})):
        reply = fleet.client.post("/v2/api-keys", json={"name": name, "scopes": scopes, "filters": filters})
        assert reply.status_code == 201, reply.text
        keys[name] = {"X-Api-Key": reply.json()["key"]}
    hidden = httpx.post(f"{stack.url}/v1/assets/{asset}/data", json=body, headers=keys["south"])
    assert hidden.status_code == 404 and hidden.json()["code"] == "asset_not_found"
    # a key that sees the asset but may not write: 403
    reader = httpx.post(f"{stack.url}/v1/assets/{asset}/data", json=body, headers=keys["north reader"])
    assert reader.status_code == 403 and reader.json()["code"] == "forbidden"
    allowed = httpx.post(f"{stack.url}/v1/assets/{asset}/data", json=body, headers={**keys["north"], **SYNC})
    assert allowed.status_code == 200, allowed.text
    assert httpx.post(f"{stack.url}/v1/assets/{asset}/data", json=body).status_code == 401


def test_a_batch_carries_several_assets(fleet, api, stack):
    first, second = fleet.asset("Excavator 8"), fleet.asset("Excavator 9")
    body = {"assets": [{"assetId": first, **example(fleet.sensor)},
                       {"assetId": second, "machineInsights": [
                           {"time": "2024-06-20T12:00:00Z", "name": "CumulativeIdleHours", "value": 210}]}]}
    reply = fleet.client.post("/v1/assets/data", json=body, headers=SYNC)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"requestId": reply.headers["X-Request-Id"], "status": "ingested", "assets": 2,
                            "machineInsights": 4, "locations": 1, "advancedSensors": 1}
    eventually(lambda: len(rows(api, stack, READINGS % first)) == 4)
    eventually(lambda: rows(api, stack, READINGS % second) == [["CumulativeIdleHours", T0, 210.0]])
    assert rows(api, stack, LOCATIONS % first) == [[T0, 55.6761, 12.5683, 8.0]]
    # one asset the key cannot see refuses the batch at once, naming it
    body["assets"].append({"assetId": "thg_elsewhere", "locations": [{"time": T0, "latitude": 1, "longitude": 1}]})
    reply = fleet.client.post("/v1/assets/data", json=body, headers=SYNC)
    assert reply.status_code == 404 and reply.json()["violations"][0]["field"] == "assets[2].assetId"


def test_malformed_bodies_are_answered_at_once(fleet):
    asset = fleet.asset("Truck 9")
    for body in (b'{"locations":', b"[]", b'{"locations": []}', b'{"machineInsights": {}}'):
        reply = fleet.client.post(f"/v1/assets/{asset}/data", content=body,
                                  headers={"Content-Type": "application/json"})
        assert reply.status_code == 400 and reply.json()["code"] == "invalid_payload", reply.text
        assert "requestId" not in reply.json()  # the edge answered alone
    for body in (b'{"assets": []}', b'{"assets": [{"locations": []}]}', b'[]'):
        reply = fleet.client.post("/v1/assets/data", content=body, headers={"Content-Type": "application/json"})
        assert reply.status_code == 400 and reply.json()["code"] == "invalid_payload", reply.text
