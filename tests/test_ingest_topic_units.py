"""The ingest topic's message → envelope translation, alone: headers, keys, formats, rejections."""

from __future__ import annotations

import io
import json
import struct

import fastavro
import orjson
import pytest

from catalog.resolution import build_table
from processors import json_body
from processors.ingest_topic import IngestMessage, UnknownSchemaId, request_id, schema_id, translate
from processors.normalize import normalize
from processors.outcome import Outcome
from schemas.public import frames_schema_text

SECRET = "slk_secret"
KEY = {"id": "key_1", "scopes": ["write"], "filters": {}}
THING = {"id": "thg_1", "placeId": "site_1", "thingTypeVersionId": "tdef_1"}
FRAMES = {"frames": [{"timestamp": 1718884800000, "metrics": {"status": 1, "moduleSoC": 87.4}}]}
MAX_BODY = 1_048_576
METRICS = {"mdef_status": {"name": "status", "dataType": "Long"},
           "mdef_soc": {"name": "moduleSoC", "dataType": "Double"}}


def authenticate(secret: str, key: dict = KEY):
    return ("org_a", key) if secret == SECRET else None


def get(kind, entity_id, org_id=None):
    return THING if (kind, entity_id, org_id) == ("thing", "thg_1", "org_a") else None


def message(value: bytes = orjson.dumps(FRAMES), key: bytes | None = b"thg_1", **headers: str | bytes):
    named = {"sluice-api-key": SECRET, **{name.replace("_", "-"): v for name, v in headers.items()}}
    pairs = [(name, v.encode() if isinstance(v, str) else v) for name, v in named.items() if v is not None]
    return IngestMessage.of(3, 41, 1718884801234, key, value, pairs)


def wire(record: dict, schema: str = frames_schema_text(), schema_id_: int = 7) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(json.loads(schema)), record)
    return b"\x00" + struct.pack(">I", schema_id_) + out.getvalue()


def run(msg: IngestMessage, schemas=None, key: dict = KEY):
    return translate(msg, lambda s: authenticate(s, key), get, schemas or {}, MAX_BODY)


def rejection(result) -> tuple[str, int]:
    assert isinstance(result, Outcome), result
    return result.verdict["errors"][0]["code"], result.verdict["http_status"]


def test_a_json_message_becomes_the_envelope_an_http_request_would_have():
    envelope = run(message(sluice_idempotency_key="k1"))
    assert envelope["request_id"] == request_id(3, 41) == "kafka-3-41"
    assert (envelope["org_id"], envelope["key_id"], envelope["route"], envelope["thing_id"]) == (
        "org_a", "key_1", "thing_data", "thg_1")
    assert envelope["received_at"] == 1718884801234 and envelope["idempotency_key"] == "k1"
    assert orjson.loads(envelope["body"]) == FRAMES
    assert SECRET.encode() not in orjson.dumps({k: v for k, v in envelope.items() if k != "body"})


def test_a_json_value_is_parsed_once_and_its_rulebook_judges_that_document():
    envelope = run(message())
    assert envelope[json_body.PARSED] == FRAMES
    # The rulebook takes the document, not the bytes: bytes that no longer parse change nothing.
    outcome = normalize({**envelope, "body": b"{"}, lambda org, thing_id: THING,
                        lambda version: build_table(["mdef_status", "mdef_soc"], METRICS))
    assert outcome.verdict["http_status"] == 200 and outcome.frames[0]["readings"]["metric_id"] == [
        "mdef_status", "mdef_soc"]
    avro = run(message(wire(FRAMES)), {7: frames_schema_text()})
    assert json_body.PARSED not in avro  # written out as JSON, parsed by the rulebook like any body


def test_an_avro_message_is_read_against_the_public_schema_as_the_frames_body():
    # A producer's own writer schema: an extra field, resolved away by the reader schema.
    writer = json.loads(frames_schema_text())
    writer["fields"].append({"name": "source", "type": "string", "default": ""})
    writer = json.dumps(writer)
    value = wire({**FRAMES, "source": "plc-7"}, writer)
    assert schema_id(message(value)) == 7
    envelope = run(message(value), {7: writer})
    assert orjson.loads(envelope["body"]) == FRAMES and envelope["route"] == "thing_data"


def test_a_template_payload_names_its_template_in_a_header():
    envelope = run(message(b'{"temp": 21.5}', sluice_template="tmpl_1@2"))
    assert (envelope["route"], envelope["template_id"]) == ("thing_template", "tmpl_1@2")


@pytest.mark.parametrize("msg, schemas, code, status", [
    (message(sluice_api_key=None), {}, "MISSING_API_KEY", 401),
    (message(sluice_api_key="slk_wrong"), {}, "INVALID_API_KEY", 401),
    (message(b"\x00\x00\x00\x00\x09garbage"), {9: UnknownSchemaId("no schema 9")}, "UNKNOWN_SCHEMA", 400),
    (message(b"\xff\xfe not json"), {}, "UNDECODABLE", 400),
    (message(b"\x00\x00\x00\x00\x07\xff\xff\xff"), {7: frames_schema_text()}, "UNDECODABLE", 400),
    (message(b"{}", content_type="text/plain"), {}, "UNDECODABLE", 400),
    (message(orjson.dumps(FRAMES), content_type="application/vnd.sluice.frames+avro"), {}, "UNDECODABLE", 400),
    (message(sluice_thing_id="thg_2"), {}, "INVALID_PAYLOAD", 400),
    (message(key=None), {}, "INVALID_PAYLOAD", 400),
    (message(sluice_idempotency_key="k" * 256), {}, "INVALID_PAYLOAD", 400),
])
def test_a_message_that_is_not_an_acceptable_request_is_rejected_with_its_reason(msg, schemas, code, status):
    outcome = run(msg, schemas)
    assert rejection(outcome) == (code, status)
    dead = outcome.dead_letters[0]
    assert dead["reason"] == code and dead["request_id"] == "kafka-3-41"
    assert dead["route"] == "unknown"  # not a request `sluice replay` could rebuild
    assert dead["original"] == (msg.value or b"")  # the value as produced; headers (the key) are not kept
    assert SECRET.encode() not in orjson.dumps({k: v for k, v in dead.items() if k != "original"})


def test_a_key_without_write_rights_or_reach_is_forbidden():
    reader = {"id": "key_2", "scopes": ["read"], "filters": {}}
    assert rejection(run(message(), key=reader)) == ("FORBIDDEN", 403)
    elsewhere = {"id": "key_3", "scopes": ["write"], "filters": {"thingIds": ["thg_9"]}}
    assert rejection(run(message(), key=elsewhere)) == ("FORBIDDEN", 403)
    by_place = {"id": "key_4", "scopes": ["write"], "filters": {"placeIds": ["site_1"]}}
    assert isinstance(run(message(), key=by_place), dict)


def test_the_thing_may_come_from_the_header_alone_or_agree_with_the_key():
    assert run(message(key=None, sluice_thing_id="thg_1"))["thing_id"] == "thg_1"
    assert run(message(sluice_thing_id="thg_1"))["thing_id"] == "thg_1"
    # An unknown thing is the rulebook's to refuse (THING_NOT_FOUND), as over HTTP.
    assert run(message(key=b"thg_unknown"))["thing_id"] == "thg_unknown"


def test_an_avro_body_over_the_limit_as_json_is_too_large():
    many = {"frames": [{"timestamp": 1718884800000 + i, "metrics": {"status": i}} for i in range(200)]}
    outcome = translate(message(wire(many)), authenticate, get, {7: frames_schema_text()}, 1000)
    assert rejection(outcome) == ("TOO_LARGE", 413)
