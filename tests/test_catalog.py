"""The catalog's rules, each against the real broker and warehouse: definitions,
versions, constraints, bulk registration, orgs, keys, scopes and filters."""

from __future__ import annotations

import secrets
import socket

import httpx
import pytest

from catalog.service import Catalog
from catalog.view import CatalogView
from schemas import Topics
from tests.conftest import eventually

SYNC = {"Prefer": "wait=10"}


def ok(reply: httpx.Response, status: int = 201) -> dict:
    assert reply.status_code == status, reply.text
    return reply.json()


def error(reply: httpx.Response, status: int) -> dict:
    assert reply.status_code == status, reply.text
    body = reply.json()["error"]
    assert set(body) == {"code", "message", "details"}  # the one error shape
    return body


@pytest.fixture(scope="module")
def org(stack):
    """A tenant of its own (created by the platform admin), with its admin key's client."""
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": stack.settings.admin_key}, timeout=30) as root:
        created = ok(root.post("/v2/orgs", json={"name": f"tenant {secrets.token_hex(3)}"}))
    assert created["id"].startswith("org_") and created["adminKey"]["key"].startswith("slk_")
    assert "hash" not in created["adminKey"]
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": created["adminKey"]["key"]}, timeout=30) as api:
        yield api


@pytest.fixture(scope="module")
def site(org) -> str:
    return ok(org.post("/v2/sites", json={"name": "Plant 1"}))["id"]


def metric(api, name: str, data_type: str = "Double", **extra) -> str:
    return ok(api.post("/v2/definitions/metrics", json={
        "name": name, "dataType": data_type, "defaultAggregation": "Last", **extra}))["id"]


def key(api, scopes: list[str], **filters) -> str:
    return ok(api.post("/v2/api-keys", json={"name": "k", "scopes": scopes, "filters": filters}))["key"]


def as_key(stack, secret: str) -> httpx.Client:
    return httpx.Client(base_url=stack.url, headers={"X-Api-Key": secret}, timeout=30)


# ----- metric definitions


def test_metric_required_fields_and_unique_names(org):
    problem = error(org.post("/v2/definitions/metrics", json={"name": "x", "defaultAggregation": "Last"}), 400)
    assert problem["code"] == "INVALID_PAYLOAD" and problem["details"]["field"] == "dataType"
    assert error(org.post("/v2/definitions/metrics", json={
        "name": "x", "dataType": "Float", "defaultAggregation": "Last"}), 400)["details"]["field"] == "dataType"
    metric(org, "Voltage")
    assert error(org.post("/v2/definitions/metrics", json={
        "name": "VOLTAGE", "dataType": "Long", "defaultAggregation": "Max"}), 409)["details"]["field"] == "name"


def test_metric_get_list_and_update(org):
    ids = [metric(org, f"temp{i}", unitLabel="°C") for i in range(3)]
    assert ok(org.get(f"/v2/definitions/metrics/{ids[0]}"), 200)["unitLabel"] == "°C"
    first = ok(org.get("/v2/definitions/metrics", params={"limit": 2}), 200)
    rest = ok(org.get("/v2/definitions/metrics", params={"limit": 1000, "cursor": first["nextCursor"]}), 200)
    listed = [m["id"] for m in first["items"] + rest["items"]]
    assert len(first["items"]) == 2 and set(ids) <= set(listed) and len(listed) == len(set(listed))
    updated = ok(org.patch(f"/v2/definitions/metrics/{ids[0]}", json={"displayName": "Temp", "unitLabel": "K"}), 200)
    assert (updated["displayName"], updated["unitLabel"], updated["name"]) == ("Temp", "K", "temp0")
    assert error(org.patch(f"/v2/definitions/metrics/{ids[0]}", json={"dataType": "Long"}), 400)["details"][
        "field"] == "dataType"  # immutable: readings were coerced by it


def test_a_page_starts_after_its_cursor_even_when_that_item_is_gone(org):
    site = ok(org.post("/v2/sites", json={"name": "Paged"}))["id"]
    for i in range(4):
        ok(org.post(f"/v2/sites/{site}/things", json={"thingName": f"t{i}"}))
    listed = [t["id"] for t in ok(org.get(f"/v2/sites/{site}/things"), 200)["items"]]
    first = ok(org.get(f"/v2/sites/{site}/things", params={"limit": 2}), 200)
    assert [t["id"] for t in first["items"]] == listed[:2]
    assert org.delete(f"/v2/things/{listed[1]}").status_code == 204  # the cursor's own item
    rest = ok(org.get(f"/v2/sites/{site}/things", params={"limit": 2, "cursor": first["nextCursor"]}), 200)
    assert [t["id"] for t in rest["items"]] == listed[2:] and rest["nextCursor"] is None
    # Any position is a cursor (from before the first item, past the last); another form is not.
    assert [t["id"] for t in ok(org.get(f"/v2/sites/{site}/things", params={"cursor": "0:a"}), 200)["items"]] == [
        listed[0], *listed[2:]]
    assert ok(org.get(f"/v2/sites/{site}/things", params={"cursor": "9999999999999999:z"}), 200)["items"] == []
    assert error(org.get(f"/v2/sites/{site}/things", params={"cursor": listed[0]}), 400)["details"][
        "field"] == "query.cursor"


def test_enum_metrics_allow_only_their_values(org, site):
    mode = metric(org, "mode", "String", enumValues=["idle", "charging"])
    assert error(org.patch(f"/v2/definitions/metrics/{mode}", json={"enumValues": ["idle"]}), 400)["details"][
        "field"] == "enumValues"  # values may be added, never removed
    ok(org.patch(f"/v2/definitions/metrics/{mode}", json={"enumValues": ["idle", "charging", "fault"]}), 200)
    kind = ok(org.post("/v2/definitions/thing-types", json={"displayName": "Charger", "metricIds": [mode]}))["id"]
    thing = ok(org.post(f"/v2/sites/{site}/things", json={"thingName": "C1", "thingTypeId": kind}))["id"]
    frame = lambda v: {"frames": [{"timestamp": 1718884800000, "metrics": {"mode": v}}]}  # noqa: E731
    assert ok(org.post(f"/v2/thing/{thing}/data", json=frame("fault"), headers=SYNC), 200)["framesIngested"] == 1
    assert error(org.post(f"/v2/thing/{thing}/data", json=frame("off"), headers=SYNC), 400)["code"] == "INVALID_VALUE"


# ----- thing types and versions


def test_thing_type_needs_existing_metrics(org):
    problem = error(org.post("/v2/definitions/thing-types", json={"displayName": "X", "metricIds": ["mdef_nope"]}),
                    404)  # an id the body names is held to the rule of one in the path
    assert (problem["code"], problem["details"]) == ("NOT_FOUND", {"field": "metricIds[0]", "id": "mdef_nope"})
    assert error(org.post("/v2/definitions/thing-types", json={"metricIds": []}), 400)["details"][
        "field"] == "displayName"


def test_new_version_binds_new_things_and_old_things_keep_theirs(org, site):
    soc, soh = metric(org, "soc"), metric(org, "soh")
    kind = ok(org.post("/v2/definitions/thing-types", json={"displayName": "Battery", "metricIds": [soc]}))
    old = ok(org.post(f"/v2/sites/{site}/things", json={"thingName": "old", "thingTypeId": kind["id"]}))
    v2 = ok(org.post(f"/v2/definitions/thing-types/{kind['id']}/versions", json={"metricIds": [soc, soh]}))
    assert v2["id"].startswith("tdef_") and v2["version"] == 2 and v2["id"] != kind["versionId"]
    new = ok(org.post(f"/v2/sites/{site}/things", json={"thingName": "new", "thingTypeId": kind["id"]}))
    assert old["thingTypeVersionId"] == kind["versionId"] and new["thingTypeVersionId"] == v2["id"]
    shown = ok(org.get(f"/v2/definitions/thing-types/{kind['id']}"), 200)
    assert shown["versionId"] == v2["id"] and shown["versionIds"] == [kind["versionId"], v2["id"]]
    assert ok(org.get(f"/v2/definitions/thing-types/{kind['id']}/versions/{kind['versionId']}"), 200)[
        "metricIds"] == [soc]

    body = {"frames": [{"timestamp": 1718884800000, "metrics": {"soc": 50, "soh": 99}}]}
    assert error(org.post(f"/v2/thing/{old['id']}/data", json=body, headers=SYNC), 400)["code"] == "UNKNOWN_METRIC"
    assert ok(org.post(f"/v2/thing/{new['id']}/data", json=body, headers=SYNC), 200)["framesIngested"] == 1


# ----- things: properties, bulk, update, delete


@pytest.fixture(scope="module")
def capacity_type(org) -> str:
    return ok(org.post("/v2/definitions/thing-types", json={
        "displayName": "Battery", "metricIds": [metric(org, "charge")],
        "propertyDefinitions": [{"name": "capacity", "valueType": "double", "unit": "kWh", "constraints": [
            {"operator": ">", "value": "0"}, {"operator": "<=", "value": "100"}]}]}))["id"]


@pytest.mark.parametrize("properties,field,words", [
    ({"colour": "red"}, "properties.colour", "unknown property"),
    ({"capacity": "150"}, "properties.capacity", "<= 100"),
    ({"capacity": 0}, "properties.capacity", "> 0"),
    ({"capacity": "lots"}, "properties.capacity", "expected a number"),
])
def test_properties_are_checked_against_the_type(org, site, capacity_type, properties, field, words):
    problem = error(org.post(f"/v2/sites/{site}/things", json={
        "thingName": "B", "thingTypeId": capacity_type, "properties": properties}), 400)
    assert problem["details"]["field"] == field and words in problem["message"]


def test_only_thing_name_is_required(org, site):
    assert ok(org.post(f"/v2/sites/{site}/things", json={"thingName": "bare"}))["id"].startswith("thg_")
    assert error(org.post(f"/v2/sites/{site}/things", json={"model": "x"}), 400)["details"]["field"] == "thingName"


def test_bulk_registration_reports_each_item(org, capacity_type):
    fleet = ok(org.post("/v2/fleets", json={"name": "Vans"}))["id"]
    report = ok(org.post(f"/v2/fleets/{fleet}/things/bulk", json=[
        {"thingName": "V1", "thingTypeId": capacity_type, "properties": {"capacity": "75"}},
        {"model": "no name"},
        {"thingName": "V3", "thingTypeId": capacity_type, "properties": {"capacity": "500"}},
        {"thingName": "V4"},
    ]), 207)
    assert (report["created"], report["failed"]) == (2, 2)
    assert [item["status"] for item in report["items"]] == [201, 400, 400, 201]
    assert report["items"][1]["error"]["details"]["field"] == "thingName"
    assert report["items"][2]["error"]["details"]["field"] == "properties.capacity"
    listed = ok(org.get(f"/v2/fleets/{fleet}/things"), 200)["items"]
    assert sorted(t["thingName"] for t in listed) == ["V1", "V4"]


def test_places_get_and_list(org, site):
    assert ok(org.get(f"/v2/sites/{site}"), 200)["kind"] == "site"
    assert site in [p["id"] for p in ok(org.get("/v2/sites"), 200)["items"]]
    assert org.get(f"/v2/fleets/{site}").status_code == 404  # a site is not a fleet


def test_thing_update_and_delete_keep_readings(org, stack, site, capacity_type):
    thing = ok(org.post(f"/v2/sites/{site}/things", json={
        "thingName": "D1", "thingTypeId": capacity_type, "properties": {"capacity": 50}}))["id"]
    assert ok(org.patch(f"/v2/things/{thing}", json={"model": "X2", "properties": {"capacity": 60}}), 200)[
        "model"] == "X2"
    assert error(org.patch(f"/v2/things/{thing}", json={"properties": {"capacity": 101}}), 400)["details"][
        "field"] == "properties.capacity"
    body = {"frames": [{"timestamp": 1718884800000, "metrics": {"charge": 7.5}}]}
    assert ok(org.post(f"/v2/thing/{thing}/data", json=body, headers=SYNC), 200)["framesIngested"] == 1
    assert org.delete(f"/v2/things/{thing}").status_code == 204
    assert org.get(f"/v2/things/{thing}").status_code == 404
    assert org.post(f"/v2/thing/{thing}/data", json=body).status_code == 404
    query = {"sql": f"SELECT value FROM {stack.settings.database}.readings WHERE thing_id = '{thing}'"}
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": stack.settings.admin_key}) as root:
        assert eventually(lambda: root.post("/v2/admin/sql", json=query).json()["rows"]) == [[7.5]]


# ----- orgs, keys, scopes, filters


def test_only_the_platform_admin_creates_orgs(org):
    assert error(org.post("/v2/orgs", json={"name": "x"}), 403)["code"] == "FORBIDDEN"


def test_scopes(org, stack, site):
    thing = ok(org.post(f"/v2/sites/{site}/things", json={"thingName": "S"}))["id"]
    reader, writer = key(org, ["read"]), key(org, ["write"])
    with as_key(stack, reader) as api:
        assert api.get(f"/v2/things/{thing}").status_code == 200
        assert error(api.post("/v2/sites", json={"name": "no"}), 403)["code"] == "FORBIDDEN"
        assert api.post(f"/v2/thing/{thing}/data", json={"frames": []}).status_code == 403
    with as_key(stack, writer) as api:
        assert api.post("/v2/sites", json={"name": "yes"}).status_code == 201
        assert api.get(f"/v2/things/{thing}").status_code == 200  # write implies read
        assert api.get("/v2/api-keys").status_code == 403  # keys need admin


def test_keys_are_listed_without_secrets_and_revoked_everywhere(org, stack):
    created = ok(org.post("/v2/api-keys", json={"name": "temp", "scopes": ["read"]}))
    assert created["key"].startswith("slk_") and created["prefix"] == created["key"][:8]
    listed = ok(org.get("/v2/api-keys"), 200)["items"]
    mine = next(k for k in listed if k["id"] == created["id"])
    assert "key" not in mine and "hash" not in mine and mine["revoked"] is False
    # Another service's view of the catalog (as a second edge would hold it).
    other = CatalogView(stack.settings.kafka_bootstrap, Topics(stack.settings.topic_prefix).catalog)
    other.start()
    try:
        assert other.wait_ready(30)
        elsewhere = Catalog(other, writer=None)
        eventually(lambda: elsewhere.authenticate(created["key"]) is not None, timeout=10)
        with as_key(stack, created["key"]) as api:
            assert api.get("/v2/orgs/current").status_code == 200
            assert org.delete(f"/v2/api-keys/{created['id']}").status_code == 204
            assert error(api.get("/v2/orgs/current"), 401)["code"] == "UNAUTHORIZED"  # here: at once
        eventually(lambda: elsewhere.authenticate(created["key"]) is None, timeout=5)  # there: within seconds
    finally:
        other.stop()


def test_another_orgs_objects_are_404_and_names_are_per_org(org, stack, battery):
    # `battery` belongs to the default org (the platform admin's); `org` is another tenant.
    assert error(org.get(f"/v2/things/{battery}"), 404)["code"] == "THING_NOT_FOUND"
    assert org.post(f"/v2/thing/{battery}/data", json={"frames": []}).status_code == 404
    assert org.get(f"/v2/things/{battery}/latest-event").status_code == 404
    metric(org, "moduleSoC")  # the default org has one too: names are unique per org only


def test_resource_filters_limit_a_key_to_its_places_and_things(org, stack, capacity_type):
    inside = ok(org.post("/v2/sites", json={"name": "inside"}))["id"]
    outside = ok(org.post("/v2/sites", json={"name": "outside"}))["id"]
    here = ok(org.post(f"/v2/sites/{inside}/things", json={"thingName": "in", "thingTypeId": capacity_type}))["id"]
    there = ok(org.post(f"/v2/sites/{outside}/things", json={"thingName": "out", "thingTypeId": capacity_type}))["id"]
    body = {"frames": [{"timestamp": 1718884800000, "metrics": {"charge": 1}}]}
    with as_key(stack, key(org, ["write"], placeIds=[inside])) as api:
        assert api.post(f"/v2/thing/{here}/data", json=body).status_code == 202
        assert error(api.post(f"/v2/thing/{there}/data", json=body), 403)["code"] == "FORBIDDEN"
        assert api.post(f"/v2/sites/{outside}/things", json={"thingName": "x"}).status_code == 403
        assert [s["id"] for s in ok(api.get("/v2/sites"), 200)["items"]] == [inside]
    with as_key(stack, key(org, ["read"], thingIds=[there])) as api:
        assert api.get(f"/v2/things/{there}").status_code == 200
        assert api.get(f"/v2/things/{here}").status_code == 403
    assert error(org.post("/v2/api-keys", json={"name": "bad", "scopes": ["read"],
                                                "filters": {"placeIds": ["site_nope"]}}), 404)["details"][
        "field"] == "filters.placeIds"
    assert error(org.post("/v2/api-keys", json={"name": "bad", "scopes": ["read"],
                                                "filters": {"thingIds": ["thg_nope"]}}), 404)["details"] == {
        "field": "filters.thingIds", "id": "thg_nope"}


def test_catching_up_with_no_broker_answers_false_rather_than_raising():
    """A sync reply that asks the view to catch up (or a 401/404 miss) must not fail for it:
    with no broker to say where the catalog ends, the view says it did not catch up."""
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    view = CatalogView(f"127.0.0.1:{port}", "nowhere.catalog")
    try:
        assert view.catch_up_to_end(timeout=1.0) is False
    finally:
        view.stop()
