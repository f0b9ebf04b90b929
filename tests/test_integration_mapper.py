"""The integration rulebook alone (processors/integrations.py): a message through the
integration's template and resource mapping to one frame batch per thing, its report,
and the UNMAPPED_RESOURCE dead letter, without services."""

from __future__ import annotations

import secrets

import orjson

from catalog.integrations import auto_thing_id
from catalog.resolution import build_table
from processors.integrations import AUTO_REGISTER_MAX, map_integration
from processors.rulebooks import RULEBOOKS

METRICS = {"mdef_temp": {"name": "temperature", "dataType": "Double"}}
TABLE = build_table(list(METRICS), METRICS)
THINGS = {"thg_1": {"id": "thg_1", "thingTypeVersionId": "tdef_1"},
          "thg_2": {"id": "thg_2", "thingTypeVersionId": "tdef_1"},
          "thg_untyped": {"id": "thg_untyped"}}


def template(records: str = "payload.readings || [payload]") -> dict:
    return {"id": f"tmpl_{secrets.token_hex(4)}", "revision": 1, "name": "telemetry", "target": "ThingData",
            "records": records, "timestamp": {"path": "ts", "format": "epochMillis"},
            "metrics": {"temperature": "temp"}}


PLACES = {("place", "site_1", "org_a"): {"id": "site_1", "kind": "site"},
          ("thing_type", "tdefi_1", "org_a"): {"id": "tdefi_1", "latestVersionId": "tdef_1"}}


def judge(message: dict, resource: dict, things: dict, tmpl: dict | None = None, org: str = "org_a",
          auto: dict | None = None, known: dict | None = None):
    tmpl = tmpl or template("readings || [@]")
    integration = {"id": "intg_1", "templateId": tmpl["id"], "resource": resource, "things": things,
                   "autoRegister": auto}
    entities = {("integration", "intg_1", "org_a"): integration, ("template", tmpl["id"], "org_a"): tmpl,
                **{("thing", k, "org_a"): v for k, v in THINGS.items()}, **PLACES, **(known or {})}
    envelope = {"request_id": "req_1", "org_id": org, "key_id": "intg_1", "route": "integration",
                "received_at": 1718884800000, "thing_id": None, "stream": None, "template_id": None,
                "body": orjson.dumps(message)}
    return map_integration(envelope, lambda kind, entity_id, org_id=None: entities.get((kind, entity_id, org_id)),
                           lambda version: TABLE if version == "tdef_1" else None)


def report(outcome) -> dict:
    return orjson.loads(outcome.verdict["report"])


def test_the_rulebook_is_registered_for_the_integration_route():
    assert "integration" in RULEBOOKS


def test_a_topic_level_names_the_thing_of_every_record():
    message = {"topic": "plant/dev-7/telemetry", "headers": {}, "payload": {"ts": 1718884800000, "temp": 21.5}}
    outcome = judge(message, {"from": "message", "expression": "topicLevels[1]"}, {"dev-7": "thg_1"})
    assert [b["thing_id"] for b in outcome.frames] == ["thg_1"]
    assert outcome.frames[0]["readings"].rows == 1
    assert outcome.verdict["status"] == "ingested" and outcome.dead_letters == []
    assert report(outcome)["readingsWritten"] == 1


def test_records_of_one_feed_land_on_their_own_things():
    payload = {"readings": [{"dev": "a", "ts": 1718884800000, "temp": 1.0},
                            {"dev": "b", "ts": 1718884800000, "temp": 2.0},
                            {"dev": "a", "ts": 1718884801000, "temp": 3.0}]}
    outcome = judge({"topic": None, "headers": {}, "payload": payload}, {"from": "record", "expression": "dev"},
                    {"a": "thg_1", "b": "thg_2"}, template("readings"))
    assert sorted((b["thing_id"], b["readings"].rows) for b in outcome.frames) == [("thg_1", 2), ("thg_2", 1)]
    assert report(outcome)["readingsWritten"] == 3


def test_an_unmapped_id_is_a_replayable_dead_letter_and_the_rest_lands():
    payload = {"readings": [{"dev": "a", "ts": 1718884800000, "temp": 1.0},
                            {"dev": "zz", "ts": 1718884800000, "temp": 2.0}]}
    body = {"topic": None, "headers": {}, "payload": payload}
    outcome = judge(body, {"from": "record", "expression": "dev"}, {"a": "thg_1"}, template("readings"))
    assert [b["thing_id"] for b in outcome.frames] == ["thg_1"]
    [dead] = outcome.dead_letters
    assert dead["reason"] == "UNMAPPED_RESOURCE" and "'zz'" in dead["detail"]
    assert dead["route"] == "integration" and dead["key_id"] == "intg_1"
    assert orjson.loads(dead["original"]) == body  # the whole message: a replay maps it afresh
    assert report(outcome)["unmappedResources"] == [{"externalId": "zz", "records": 1}]
    assert outcome.verdict["errors"][0]["code"] == "UNMAPPED_RESOURCE"


def test_nothing_mapped_writes_nothing():
    message = {"topic": "plant/dev-9/telemetry", "headers": {}, "payload": {"ts": 1718884800000, "temp": 1.0}}
    outcome = judge(message, {"from": "message", "expression": "topicLevels[1]"}, {})
    assert outcome.frames == [] and outcome.verdict["status"] == "rejected"
    assert outcome.dead_letters[0]["reason"] == "UNMAPPED_RESOURCE"


def test_another_orgs_thing_or_integration_is_not_reached():
    message = {"topic": "plant/dev-7/telemetry", "headers": {}, "payload": {"ts": 1718884800000, "temp": 21.5}}
    outcome = judge(message, {"from": "message", "expression": "topicLevels[1]"}, {"dev-7": "thg_1"}, org="org_b")
    assert outcome.frames == [] and outcome.dead_letters[0]["reason"] == "INTEGRATION_NOT_FOUND"


def test_records_without_an_id_or_on_an_untyped_thing_are_skipped_with_their_reason():
    payload = {"readings": [{"ts": 1718884800000, "temp": 1.0}, {"dev": "u", "ts": 1718884800000, "temp": 2.0},
                            {"dev": "a", "ts": "never", "temp": 2.0}]}
    outcome = judge({"topic": None, "headers": {}, "payload": payload}, {"from": "record", "expression": "dev"},
                    {"a": "thg_1", "u": "thg_untyped"}, template("readings"))
    assert [(s["index"], s["reason"]) for s in report(outcome)["recordsSkipped"]] == [
        (0, "missing_resource_id"), (1, "type_not_initialized"), (2, "invalid_timestamp")]
    assert outcome.dead_letters[0]["reason"] == "RECORDS_SKIPPED"


def test_a_message_that_is_no_message_is_refused_whole():
    outcome = judge({"no": "payload"}, {"from": "message", "expression": "topicLevels[1]"}, {})
    assert outcome.verdict["http_status"] == 400 and outcome.dead_letters[0]["reason"] == "INVALID_PAYLOAD"


AUTO = {"placeId": "site_1", "thingTypeId": "tdefi_1"}


def test_an_unmapped_id_registers_a_thing_in_the_place_with_the_type_when_asked():
    payload = {"readings": [{"dev": "a", "ts": 1718884800000, "temp": 1.0},
                            {"dev": "new-1", "ts": 1718884800000, "temp": 2.0},
                            {"dev": "new-1", "ts": 1718884801000, "temp": 3.0}]}
    message = {"topic": None, "headers": {}, "payload": payload}
    outcome = judge(message, {"from": "record", "expression": "dev"}, {"a": "thg_1"}, template("readings"), auto=AUTO)
    new_id = auto_thing_id("org_a", "intg_1", "new-1")
    [entity] = outcome.catalog
    assert entity["kind"] == "thing" and entity["id"] == new_id and entity["org_id"] == "org_a"
    assert {k: entity["body"][k] for k in ("thingName", "placeId", "thingTypeId", "thingTypeVersionId", "externalId",
                                           "integrationId")} == {
        "thingName": "new-1", "placeId": "site_1", "thingTypeId": "tdefi_1", "thingTypeVersionId": "tdef_1",
        "externalId": "new-1", "integrationId": "intg_1"}
    assert sorted((b["thing_id"], b["readings"].rows) for b in outcome.frames) == sorted([("thg_1", 1), (new_id, 2)])
    assert outcome.dead_letters == [] and report(outcome)["thingsRegistered"] == [
        {"externalId": "new-1", "thingId": new_id}]
    # Seen again once registered: the same thing, nothing registered twice.
    again = judge(message, {"from": "record", "expression": "dev"}, {"a": "thg_1"}, template("readings"), auto=AUTO,
                  known={("thing", new_id, "org_a"): entity["body"]})
    assert again.catalog == [] and new_id in [b["thing_id"] for b in again.frames]


def test_no_thing_is_registered_without_auto_register_or_its_place_or_past_the_bound():
    message = {"topic": "plant/dev-9/telemetry", "headers": {}, "payload": {"ts": 1718884800000, "temp": 1.0}}
    by_topic = {"from": "message", "expression": "topicLevels[1]"}
    for auto in (None, {**AUTO, "placeId": "site_gone"}, {**AUTO, "thingTypeId": "tdefi_gone"}):
        outcome = judge(message, by_topic, {}, auto=auto)
        assert outcome.catalog == [] and outcome.dead_letters[0]["reason"] == "UNMAPPED_RESOURCE", auto
    # An id mapped explicitly stays the mapping's, even to a thing that is gone.
    assert judge(message, by_topic, {"dev-9": "thg_gone"}, auto=AUTO).catalog == []
    many = {"readings": [{"dev": f"d{n}", "ts": 1718884800000, "temp": 1.0} for n in range(AUTO_REGISTER_MAX + 3)]}
    outcome = judge({"topic": None, "headers": {}, "payload": many}, {"from": "record", "expression": "dev"}, {},
                    template("readings"), auto=AUTO)
    assert len(outcome.catalog) == AUTO_REGISTER_MAX
    assert [u["externalId"] for u in report(outcome)["unmappedResources"]] == ["d100", "d101", "d102"]
