"""Outside producers write to the public ingest topic with their own Kafka client: JSON
frames land as readings, with a verdict in the ingest log under `kafka-<partition>-<offset>`;
every message that is not an acceptable request becomes a dead letter with its reason,
and the processor keeps going."""

from __future__ import annotations

import secrets

import orjson
import pytest
from confluent_kafka import Producer

from tests.conftest import eventually
from tests.seed import SEED_FRAMES

FRAMES = orjson.dumps(SEED_FRAMES)


def produce(settings, value: bytes | None, key: str | bytes | None, headers: dict[str, str | bytes]) -> str:
    """Produce one message as a user's client would (acks=all); its request id."""
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all",
                         "enable.idempotence": True})
    delivered = []
    producer.produce(f"{settings.topic_prefix}ingest", value=value, key=key,
                     headers=[(name, v) for name, v in headers.items() if v is not None],
                     on_delivery=lambda error, message: delivered.append((error, message)))
    assert producer.flush(30) == 0
    error, message = delivered[0]
    assert error is None, error
    return f"kafka-{message.partition()}-{message.offset()}"


def sql(api, query: str) -> list[list]:
    reply = api.post("/v2/admin/sql", json={"sql": query})
    assert reply.status_code == 200, reply.text
    return reply.json()["rows"]


def verdict(api, request_id: str) -> dict | None:
    reply = api.get(f"/v2/ingest-log/{request_id}")
    return reply.json() if reply.status_code == 200 else None


def dead_letter_reason(api, stack, request_id: str) -> str | None:
    rows = sql(api, f"SELECT reason FROM {stack.settings.database}.rejects WHERE request_id = '{request_id}'")
    return rows[0][0] if rows else None


def readings(api, stack, thing: str) -> int:
    return sql(api, f"SELECT count() FROM (SELECT 1 FROM {stack.settings.database}.readings WHERE thing_id = "
                    f"'{thing}' ORDER BY version DESC LIMIT 1 BY thing_id, metric_id, ts)")[0][0]


@pytest.fixture()
def writer_key(api) -> tuple[str, str]:
    """(key id, secret) of a fresh write key of the admin's org."""
    reply = api.post("/v2/api-keys", json={"name": "upstream producer", "scopes": ["write"]})
    assert reply.status_code == 201, reply.text
    return reply.json()["id"], reply.json()["key"]


def test_json_frames_land_as_readings_with_a_verdict_under_the_derived_id(api, stack, battery, writer_key):
    request_id = produce(stack.settings, FRAMES, battery, {"sluice-api-key": writer_key[1]})
    found = eventually(lambda: verdict(api, request_id))
    assert (found["status"], found["httpStatus"], found["framesIngested"]) == ("ingested", 200, 1)
    assert found["thingId"] == battery and found["route"] == "thing_data"
    eventually(lambda: readings(api, stack, battery) == 5)
    rows = sql(api, f"SELECT value FROM {stack.settings.database}.readings WHERE thing_id = '{battery}' "
                    "ORDER BY value")
    assert [r[0] for r in rows] == [1, 12.1, 52.3, 87.4, 98.1]
    # The plaintext key is nowhere in what was stored.
    stored = sql(api, f"SELECT count() FROM {stack.settings.database}.ingest_log "
                      f"WHERE positionCaseInsensitive(errors, '{writer_key[1]}') > 0 OR key_id = '{writer_key[1]}'")
    assert stored == [[0]]


def test_each_bad_message_is_a_dead_letter_with_its_reason_and_the_processor_keeps_going(
        api, stack, battery, writer_key):
    secret = writer_key[1]
    unknown_metric = orjson.dumps({"frames": [{"timestamp": 1718884800000, "metrics": {"bogus": 1}}]})
    reader = api.post("/v2/api-keys", json={"name": "reader", "scopes": ["read"]}).json()["key"]
    cases = {
        "MISSING_API_KEY": (FRAMES, battery, {}),
        "INVALID_API_KEY": (FRAMES, battery, {"sluice-api-key": "slk_not-a-key"}),
        "FORBIDDEN": (FRAMES, battery, {"sluice-api-key": reader}),
        "THING_NOT_FOUND": (FRAMES, "thg_nope", {"sluice-api-key": secret}),
        "UNKNOWN_METRIC": (unknown_metric, battery, {"sluice-api-key": secret}),
        "UNDECODABLE": (b"\xffneither json nor avro", battery, {"sluice-api-key": secret}),
        # A wire-format value whose schema id no registry knows (here: none is configured).
        "UNKNOWN_SCHEMA": (b"\x00\x00\x0f\x42\x3f\x02\x00", battery, {"sluice-api-key": secret}),
    }
    ids = {reason: produce(stack.settings, *case) for reason, case in cases.items()}
    valid = produce(stack.settings, FRAMES, battery, {"sluice-api-key": secret})
    for reason, request_id in ids.items():
        assert eventually(lambda: dead_letter_reason(api, stack, request_id)) == reason
    assert eventually(lambda: verdict(api, valid))["status"] == "ingested"
    eventually(lambda: readings(api, stack, battery) == 5)
    # The unknown metric's dead letter is a request `sluice replay` can send again.
    route = sql(api, f"SELECT route FROM {stack.settings.database}.rejects WHERE request_id = "
                     f"'{ids['UNKNOWN_METRIC']}'")
    assert route == [["thing_data"]]
    stack.check_alive()


def test_a_revoked_key_is_refused_within_seconds(api, stack, battery, writer_key):
    key_id, secret = writer_key
    first = produce(stack.settings, FRAMES, battery, {"sluice-api-key": secret})
    assert eventually(lambda: verdict(api, first))["status"] == "ingested"
    assert api.delete(f"/v2/api-keys/{key_id}").status_code == 204
    after = produce(stack.settings, FRAMES, battery, {"sluice-api-key": secret})
    assert eventually(lambda: dead_letter_reason(api, stack, after), timeout=10) == "INVALID_API_KEY"


def test_an_idempotency_key_repeat_is_answered_with_the_first_verdict(api, stack, battery, writer_key):
    headers = {"sluice-api-key": writer_key[1], "sluice-idempotency-key": "batch-0001",
               "sluice-thing-id": battery}
    first = produce(stack.settings, FRAMES, battery, headers)
    repeat = produce(stack.settings, FRAMES, None, headers)  # the thing from the header alone
    assert eventually(lambda: verdict(api, first))["duplicateOf"] is None
    assert eventually(lambda: verdict(api, repeat))["duplicateOf"] == first
    eventually(lambda: readings(api, stack, battery) == 5)
    frames_rows = sql(api, f"SELECT count() FROM {stack.settings.database}.readings "
                           f"WHERE thing_id = '{battery}' AND request_id = '{repeat}'")
    assert frames_rows == [[0]]


def test_a_template_payload_is_mapped_by_the_template_it_names(api, stack, battery, writer_key):
    from tests.test_templates import PAYLOAD, TEMPLATE

    created = api.post("/v2/templates", json={**TEMPLATE, "name": "Acme BMS export, by Kafka"})
    assert created.status_code == 201, created.text
    request_id = produce(stack.settings, orjson.dumps(PAYLOAD), battery,
                         {"sluice-api-key": writer_key[1], "sluice-template": created.json()["id"]})
    found = eventually(lambda: verdict(api, request_id))
    assert (found["status"], found["route"], found["framesIngested"]) == ("ingested", "thing_template", 3)
    report = found["report"]
    assert (report["templateRevision"], report["metricValuesWritten"]) == (1, 7)
    eventually(lambda: readings(api, stack, battery) == 7)


def test_a_dead_letter_from_the_ingest_topic_is_replayed_under_its_id_once_the_cause_is_fixed(
        api, stack, writer_key):
    """As for HTTP requests (tests/test_ingest_log.py): a thing without a type is 424; given its
    type, `sluice replay` ingests the dead letter under kafka-<partition>-<offset>. A message
    without a valid key is no request: the replay skips it (its producer must send it again)."""
    from sluice.replay import replay_dead_letters
    from tests.test_ingest_log import created

    token = secrets.token_hex(4)
    metric_id = created(api.post("/v2/definitions/metrics", json={
        "name": f"temp_{token}", "dataType": "Double", "defaultAggregation": "Last"}))
    type_id = created(api.post("/v2/definitions/thing-types", json={
        "displayName": f"Sensor {token}", "metricIds": [metric_id]}))
    site_id = created(api.post("/v2/sites", json={"name": f"Site {token}"}))
    thing = created(api.post(f"/v2/sites/{site_id}/things", json={"thingName": f"Untyped {token}"}))
    body = orjson.dumps({"frames": [{"timestamp": 1718884800000, "metrics": {f"temp_{token}": 5.0}}]})
    request_id = produce(stack.settings, body, thing, {"sluice-api-key": writer_key[1]})
    assert eventually(lambda: dead_letter_reason(api, stack, request_id)) == "TYPE_NOT_INITIALIZED"
    keyless = produce(stack.settings, body, thing, {})
    assert eventually(lambda: dead_letter_reason(api, stack, keyless)) == "MISSING_API_KEY"
    first = verdict(api, request_id)

    assert api.patch(f"/v2/things/{thing}", json={"thingTypeId": type_id}).status_code == 200
    bootstrap, settings = stack.settings.kafka_bootstrap, stack.settings
    assert replay_dead_letters(bootstrap, settings, request_id=keyless) == (1, 0)
    assert replay_dead_letters(bootstrap, settings, request_id=request_id) == (1, 1)
    second = eventually(lambda: (v := verdict(api, request_id)) and v["processedAt"] > first["processedAt"] and v)
    assert (second["status"], second["framesIngested"], second["receivedAt"]) == ("ingested", 1, first["receivedAt"])
    eventually(lambda: readings(api, stack, thing) == 1)
