"""Seed 001's "Ingesting via templates" on the real stack: templates with revisions in the
catalog, `POST /v2/thing/{thingId}/data/template/{templateId}` answering the seed's
processing report, readings in ClickHouse, previews that write nothing, bad templates
and bad payloads refused clearly, and org isolation."""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.conftest import eventually

TEMPLATE = {
    "name": "Acme BMS export",
    "description": "the vendor's hourly JSON export",
    "target": "ThingData",
    "records": "payload.samples",
    "timestamp": {"path": "t", "format": "epochMillis"},
    "metrics": {"moduleSoC": "bms.soc", "moduleVoltage": "bms.volts", "status": "state"},
}
# Three good records (7 values), three bad: the seed's invalid_timestamp among them.
PAYLOAD = {"device": "acme-17", "payload": {"samples": [
    {"t": 1718884800000, "bms": {"soc": 87.4, "volts": 52.3}, "state": 1},
    {"t": "n/a", "bms": {"soc": 80.1}},
    {"t": 1718884801000, "bms": {"soc": 87.2, "volts": 52.2}, "state": 1},
    {"t": 1718884802000, "bms": {"soc": "full"}},
    {"bms": {"soc": 86.0}},
    {"t": 1718884803000, "bms": {"soc": 87.0}},
]}}
SKIPPED = [{"index": 1, "reason": "invalid_timestamp", "value": "n/a"},
           {"index": 3, "reason": "invalid_value", "value": "full"},
           {"index": 4, "reason": "missing_timestamp", "value": None}]


def ok(reply: httpx.Response, status: int = 200) -> dict:
    assert reply.status_code == status, reply.text
    return reply.json() if reply.content else {}


def refused(reply: httpx.Response, status: int, code: str) -> dict:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["code"] == code, error
    return error


def ingest(api, thing: str, template: str, body, preview: bool = False, **headers) -> httpx.Response:
    content = body if isinstance(body, bytes) else httpx.Request("POST", "/", json=body).content
    return api.post(f"/v2/thing/{thing}/data/template/{template}", content=content,
                    params={"previewOnly": str(preview).lower()},
                    headers={"Content-Type": "application/json", **headers})


def sql(api, stack, query: str) -> list:
    return ok(api.post("/v2/admin/sql", json={"sql": query.format(db=stack.settings.database)}))["rows"]


def readings(api, stack, thing: str) -> list:
    return sql(api, stack, "SELECT m.name, toUnixTimestamp64Milli(r.ts), r.value FROM {db}.readings AS r "
                           "JOIN {db}.metric_definitions AS m USING (org_id, metric_id) "
                           f"WHERE r.thing_id = '{thing}' ORDER BY r.ts, m.name")


@pytest.fixture(scope="module")
def template(stack, battery_type) -> dict:
    """The Acme template, created once (the seed's metrics are defined by battery_type)."""
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": stack.settings.admin_key}, timeout=30) as api:
        return ok(api.post("/v2/templates", json=TEMPLATE), 201)


def test_a_template_is_a_catalog_entity(api, template):
    assert template["id"].startswith("tmpl_") and template["revision"] == 1
    assert {k: template[k] for k in TEMPLATE} == TEMPLATE
    assert ok(api.get(f"/v2/templates/{template['id']}")) == template
    assert template["id"] in [t["id"] for t in ok(api.get("/v2/templates", params={"limit": 1000}))["items"]]
    assert ok(api.get(f"/v2/templates/{template['id']}/revisions/1")) == template


def test_the_seed_report_and_the_readings_in_clickhouse(api, stack, template, battery):
    reply = ingest(api, battery, template["id"], PAYLOAD)
    report = ok(reply)
    assert report.pop("requestId") == reply.headers["X-Request-Id"]
    assert report == {"previewOnly": False, "templateId": template["id"], "templateRevision": 1,
                      "recordsParsed": 6, "readingsWritten": 3, "metricValuesWritten": 7, "recordsSkipped": SKIPPED}
    assert eventually(lambda: len(found := readings(api, stack, battery)) == 7 and found) == [
        ["moduleSoC", 1718884800000, 87.4], ["moduleVoltage", 1718884800000, 52.3], ["status", 1718884800000, 1],
        ["moduleSoC", 1718884801000, 87.2], ["moduleVoltage", 1718884801000, 52.2], ["status", 1718884801000, 1],
        ["moduleSoC", 1718884803000, 87.0]]
    # The skipped records are one dead letter, with the whole payload for a replay.
    dead = f"SELECT reason, item_index FROM {{db}}.rejects WHERE request_id = '{reply.headers['X-Request-Id']}'"
    assert eventually(lambda: sql(api, stack, dead)) == [["RECORDS_SKIPPED", 1]]


def test_preview_maps_and_reports_but_writes_nothing(api, stack, template, battery):
    count = f"SELECT count() FROM {{db}}.readings WHERE thing_id = '{battery}'"
    before = sql(api, stack, count)
    reply = ingest(api, battery, template["id"], PAYLOAD, preview=True)
    report = ok(reply)
    assert report["previewOnly"] is True and report["readingsWritten"] == 3 and report["metricValuesWritten"] == 7
    assert report["recordsSkipped"] == SKIPPED
    # Written after the preview: once its verdict is in the ingest log, so would the preview's rows be.
    ok(ingest(api, battery, template["id"], {"payload": {"samples": [{"t": 5, "state": 0}]}}))
    eventually(lambda: sql(api, stack, count) == [[before[0][0] + 1]])
    rejects = f"SELECT count() FROM {{db}}.rejects WHERE request_id = '{reply.headers['X-Request-Id']}'"
    assert sql(api, stack, rejects) == [[0]] and before == [[0]]
    assert eventually(lambda: api.get(f"/v2/ingest-log/{reply.headers['X-Request-Id']}").status_code == 200)


def test_an_update_is_a_new_revision_and_the_old_one_stays_readable(api, battery_type, battery):
    created = ok(api.post("/v2/templates", json={**TEMPLATE, "name": "to revise"}), 201)
    revised = ok(api.put(f"/v2/templates/{created['id']}", json={
        **TEMPLATE, "name": "to revise", "timestamp": {"path": "t", "format": "epochSeconds"}}))
    assert revised["revision"] == 2 and revised["timestamp"]["format"] == "epochSeconds"
    assert ok(api.get(f"/v2/templates/{created['id']}"))["revision"] == 2
    old = ok(api.get(f"/v2/templates/{created['id']}/revisions/1"))
    assert old["revision"] == 1 and old["timestamp"]["format"] == "epochMillis"
    refused(api.get(f"/v2/templates/{created['id']}/revisions/3"), 404, "NOT_FOUND")
    report = ok(ingest(api, battery, created["id"], {"payload": {"samples": [{"t": 1718884800, "state": 2}]}}))
    assert report["templateRevision"] == 2 and report["readingsWritten"] == 1
    # Deleted: gone from reads and ingest, its revisions too.
    assert api.delete(f"/v2/templates/{created['id']}").status_code == 204
    refused(api.get(f"/v2/templates/{created['id']}"), 404, "NOT_FOUND")
    refused(api.get(f"/v2/templates/{created['id']}/revisions/1"), 404, "NOT_FOUND")
    refused(ingest(api, battery, created["id"], PAYLOAD), 404, "TEMPLATE_NOT_FOUND")


@pytest.mark.parametrize("change,code,field,expression", [
    ({"records": "payload.samples[?"}, "INVALID_TEMPLATE", "records", "payload.samples[?"),
    ({"timestamp": {"path": "t..x", "format": "epochMillis"}}, "INVALID_TEMPLATE", "timestamp.path", "t..x"),
    ({"metrics": {"moduleSoC": "bms.soc", "status": "length("}}, "INVALID_TEMPLATE", "metrics.status", "length("),
    ({"metrics": {"humidity": "bms.rh"}}, "UNKNOWN_METRIC", "metrics.humidity", "bms.rh"),
])
def test_a_bad_template_is_400_naming_the_expression(api, battery_type, change, code, field, expression):
    error = refused(api.post("/v2/templates", json={**TEMPLATE, **change}), 400, code)
    assert error["details"]["field"] == field and error["details"]["expression"] == expression
    assert expression in error["message"]


def test_a_template_targets_thing_data_only(api, battery_type):
    error = refused(api.post("/v2/templates", json={**TEMPLATE, "target": "AssetData"}), 400, "INVALID_PAYLOAD")
    assert error["details"]["field"] == "target"
    error = refused(api.post("/v2/templates", json={**TEMPLATE, "timestamp": {"path": "t", "format": "ms"}}),
                    400, "INVALID_PAYLOAD")
    assert error["details"]["field"] == "timestamp.format"


def test_bad_payloads_get_a_clear_verdict_and_the_processor_keeps_going(api, stack, template, battery):
    refused(ingest(api, battery, template["id"], b"{not json"), 400, "INVALID_PAYLOAD")
    error = refused(ingest(api, battery, template["id"], {"payload": {"samples": 42}}), 400, "RECORDS_NOT_AN_ARRAY")
    assert error["details"]["field"] == "records" and "42" in error["message"]
    refused(ingest(api, battery, template["id"], {"other": []}), 400, "RECORDS_NOT_FOUND")
    many = {"payload": {"samples": [{"t": 1718884800000 + i, "state": 1} for i in range(10_000)]}}
    refused(ingest(api, battery, template["id"], many), 400, "TOO_MANY_RECORDS")
    # Timestamp formats mixed: the template says epoch ms; an ISO string or fractional seconds are skipped.
    mixed = {"payload": {"samples": [{"t": 1718884800000, "state": 1}, {"t": "2024-06-20T12:00:01Z", "state": 1},
                                     {"t": 1718884802.5, "state": 1}]}}
    report = ok(ingest(api, battery, template["id"], mixed))
    assert report["readingsWritten"] == 1 and report["recordsSkipped"] == [
        {"index": 1, "reason": "invalid_timestamp", "value": "2024-06-20T12:00:01Z"},
        {"index": 2, "reason": "invalid_timestamp", "value": 1718884802.5}]
    # And the processor still maps the next request.
    assert ok(ingest(api, battery, template["id"], PAYLOAD))["readingsWritten"] == 3


def test_a_thing_without_a_type_is_424(api, battery_type, template):
    site, _ = battery_type
    untyped = ok(api.post(f"/v2/sites/{site}/things", json={"thingName": "no type"}), 201)["id"]
    refused(ingest(api, untyped, template["id"], PAYLOAD), 424, "TYPE_NOT_INITIALIZED")


@pytest.mark.parametrize("prefer", ["respond-async", "wait=0"])
def test_without_a_wait_the_ingest_log_holds_the_report(api, template, battery, prefer):
    reply = ingest(api, battery, template["id"], PAYLOAD, Prefer=prefer)
    accepted = ok(reply, 202)
    assert accepted["templateRevision"] == 1 and accepted["requestId"] == reply.headers["X-Request-Id"]
    entry = eventually(lambda: (r := api.get(f"/v2/ingest-log/{accepted['requestId']}")).status_code == 200
                       and r.json())
    assert entry["report"] == {"previewOnly": False, "templateId": template["id"], "templateRevision": 1,
                               "recordsParsed": 6, "readingsWritten": 3, "metricValuesWritten": 7,
                               "recordsSkipped": SKIPPED}
    assert entry["route"] == "thing_template" and entry["status"] == "ingested"


def test_another_org_s_template_is_404(api, stack, template, battery):
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": stack.settings.admin_key}, timeout=30) as root:
        org = ok(root.post("/v2/orgs", json={"name": f"templates {secrets.token_hex(3)}"}), 201)
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": org["adminKey"]["key"]}, timeout=30) as other:
        # The other org has none of the seed's metrics: its author cannot map them.
        refused(other.post("/v2/templates", json=TEMPLATE), 400, "UNKNOWN_METRIC")
        for call in (other.get(f"/v2/templates/{template['id']}"),
                     other.get(f"/v2/templates/{template['id']}/revisions/1"),
                     other.put(f"/v2/templates/{template['id']}", json=TEMPLATE),
                     other.delete(f"/v2/templates/{template['id']}")):
            assert call.status_code == 404, call.text
        assert template["id"] not in [t["id"] for t in ok(other.get("/v2/templates"))["items"]]
        ok(other.post("/v2/definitions/metrics", json={"name": "moduleSoC", "dataType": "Double",
                                                       "defaultAggregation": "Last"}), 201)
        theirs = ok(other.post("/v2/templates", json={**TEMPLATE, "metrics": {"moduleSoC": "bms.soc"}}), 201)
    refused(api.get(f"/v2/templates/{theirs['id']}"), 404, "NOT_FOUND")
    refused(ingest(api, battery, theirs["id"], PAYLOAD), 404, "TEMPLATE_NOT_FOUND")
