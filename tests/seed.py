"""Seed 001's example bodies, its setup steps 1–3 as one function, and an org with a target for
every dialect."""

from __future__ import annotations

import secrets

import httpx

SEED_METRICS = [
    {"name": "status", "dataType": "Long", "defaultAggregation": "Last"},
    {"name": "moduleSoC", "displayName": "State of Charge", "description": "Battery state of charge, 0–100",
     "dataType": "Double", "defaultAggregation": "Last", "unitLabel": "%"},
    {"name": "moduleSoH", "dataType": "Double", "defaultAggregation": "Last", "unitLabel": "%"},
    {"name": "moduleVoltage", "dataType": "Double", "defaultAggregation": "Avg", "unitLabel": "V"},
    {"name": "moduleCurrent", "dataType": "Double", "defaultAggregation": "Avg", "unitLabel": "A"},
]
SEED_FRAMES = {
    "frames": [
        {
            "timestamp": 1718884800000,
            "metrics": {"status": 1, "moduleSoC": 87.4, "moduleSoH": 98.1, "moduleVoltage": 52.3,
                        "moduleCurrent": 12.1},
        }
    ]
}


def register_battery_type(api: httpx.Client) -> tuple[str, str]:
    """Seed 001 steps 1–2 and a site: the metrics, the Battery type; returns (site id, type id).

    Metric names are unique per org, so this runs once per test session.
    """
    metric_ids = []
    for body in SEED_METRICS:
        reply = api.post("/v2/definitions/metrics", json=body)
        assert reply.status_code == 201, reply.text
        assert reply.json()["id"].startswith("mdef_")
        metric_ids.append(reply.json()["id"])
    reply = api.post("/v2/definitions/thing-types", json={
        "displayName": "Battery", "description": "Aerovy battery", "metricIds": metric_ids,
        "propertyDefinitions": [{"name": "capacity", "description": "Battery capacity", "unit": "kWh",
                                 "valueType": "double", "constraints": [
                                     {"operator": ">", "value": "0"}, {"operator": "<=", "value": "100"}]}],
    })
    assert reply.status_code == 201, reply.text
    thing_type = reply.json()
    assert thing_type["id"].startswith("tdefi_") and thing_type["versionId"].startswith("tdef_")
    reply = api.post("/v2/sites", json={"name": "Plant 1"})
    assert reply.status_code == 201, reply.text
    return reply.json()["id"], thing_type["id"]


def register_battery(api: httpx.Client, site_id: str, type_id: str) -> str:
    """Seed 001 step 3: register Battery A1 in the site; returns the thing id."""
    reply = api.post(f"/v2/sites/{site_id}/things", json={
        "thingName": "Battery A1", "thingType": "Battery", "thingTypeId": type_id,
        "thingDescription": "Rack 1, slot A1", "manufacturer": "Aerovy", "model": "AVY-100",
        "latitude": 37.7749, "longitude": -122.4194, "properties": {"capacity": "75"},
    })
    assert reply.status_code == 201, reply.text
    return reply.json()["id"]




def org_with_every_target(base_url: str, platform_key: str, label: str) -> dict[str, str]:
    """A fresh org (made by the platform admin) with a target for every dialect: a Double metric
    `level`, a type with it, a site, a thing of the type, a ThingData template (`samples`, each
    record's `t` and `v` → level), the stream `tanks`, a data source and an auto-provisioning
    harbor. Returns the org's admin key (`key`) and their ids (`stream`: its name)."""
    def created(reply: httpx.Response) -> dict:
        assert reply.status_code == 201, reply.text
        return reply.json()

    with httpx.Client(base_url=base_url, headers={"X-Api-Key": platform_key}, timeout=30) as root:
        org = created(root.post("/v2/orgs", json={"name": f"{label} {secrets.token_hex(3)}"}))
    key = org["adminKey"]["key"]
    with httpx.Client(base_url=base_url, headers={"X-Api-Key": key}, timeout=30) as api:
        metric = created(api.post("/v2/definitions/metrics", json={
            "name": "level", "dataType": "Double", "defaultAggregation": "Last"}))["id"]
        kind = created(api.post("/v2/definitions/thing-types", json={"displayName": "Tank", "metricIds": [metric]}))
        site = created(api.post("/v2/sites", json={"name": "Depot"}))["id"]
        thing = created(api.post(f"/v2/sites/{site}/things", json={"thingName": "Tank 1", "thingTypeId": kind["id"]}))
        template = created(api.post("/v2/templates", json={
            "name": "samples", "target": "ThingData", "records": "samples",
            "timestamp": {"path": "t", "format": "epochMillis"}, "metrics": {"level": "v"}}))["id"]
        stream = created(api.post("/v2/streams", json={"name": "tanks"}))["name"]
        datasource = created(api.post("/v2/datasources", json={"name": "Depot log"}))["id"]
        harbor = created(api.post("/v2/harbors", json={"name": "Port", "autoProvision": True}))["id"]
    return {"key": key, "metric": metric, "type": kind["id"], "version": kind["versionId"], "site": site,
            "thing": thing["id"], "template": template, "stream": stream, "datasource": datasource, "harbor": harbor}
