"""Schema evolution: a message written with an older schema version (kept in
schemas/avro/history/) still decodes, as the current version."""

import io
import json
from importlib import resources

import fastavro
import pytest

import schemas
from schemas import codec, frames

VERDICT = {
    "request_id": "req_1", "org_id": "org_a", "thing_id": "thg_1", "route": "thing_data", "status": "ingested",
    "http_status": 200, "frames_received": 1, "frames_ingested": 1, "metrics": ["moduleSoC"],
    "errors": [{"code": "X", "message": "m", "field": None}], "duplicate_of": None,
    "received_at": 1718884800123, "processed_at": 1718884800200,
}
# The Verdict as every deployment before `request_hash` wrote it (results and idempotency topics).
VERDICT_V1_HEADER = bytes.fromhex("c30107cb7197c14f2a06")


def written_with(history_file: str, record: dict) -> bytes:
    """`record` as an older version wrote it: that schema's header, then its encoding."""
    text = resources.files("schemas").joinpath("avro", "history", history_file).read_text()
    schema = fastavro.parse_schema(json.loads(text))
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, record)
    return codec._header_of(schema) + out.getvalue()


def test_the_history_file_is_the_schema_old_messages_name():
    assert written_with("results.v1.avsc", VERDICT)[:codec.HEADER_SIZE] == VERDICT_V1_HEADER


def test_a_verdict_written_before_request_hash_reads_as_the_current_version():
    old = written_with("results.v1.avsc", VERDICT)
    assert old[:codec.HEADER_SIZE] != schemas.encode(schemas.VERDICT, VERDICT)[:codec.HEADER_SIZE]
    assert schemas.decode(schemas.VERDICT, old) == {**VERDICT, "request_hash": None, "key_id": None, "stream": None,
                                                   "report": None, "catalog_changed": False}


def test_a_verdict_written_before_key_id_reads_as_the_current_version():
    old = written_with("results.v2.avsc", {**VERDICT, "request_hash": "ab" * 32})
    assert schemas.decode(schemas.VERDICT, old) == {**VERDICT, "request_hash": "ab" * 32, "key_id": None,
                                                   "stream": None, "report": None, "catalog_changed": False}


def test_a_verdict_written_before_report_reads_as_the_current_version():
    old = written_with("results.v3.avsc", {**VERDICT, "request_hash": None, "key_id": "key_1", "stream": "sales"})
    assert old[:codec.HEADER_SIZE] != schemas.encode(schemas.VERDICT, VERDICT)[:codec.HEADER_SIZE]
    assert schemas.decode(schemas.VERDICT, old) == {**VERDICT, "request_hash": None, "key_id": "key_1",
                                                   "stream": "sales", "report": None, "catalog_changed": False}


def test_a_verdict_written_before_catalog_changed_reads_as_the_current_version():
    old = written_with("results.v4.avsc", {**VERDICT, "request_hash": None, "key_id": "key_1", "stream": None,
                                           "report": '{"recordsParsed":1}'})
    assert old[:codec.HEADER_SIZE] != schemas.encode(schemas.VERDICT, VERDICT)[:codec.HEADER_SIZE]
    assert schemas.decode(schemas.VERDICT, old) == {**VERDICT, "request_hash": None, "key_id": "key_1", "stream": None,
                                                   "report": '{"recordsParsed":1}', "catalog_changed": False}


@pytest.mark.parametrize("request_hash,report,changed", [(None, None, False), ("ab" * 32, '{"recordsParsed":1}', True)])
def test_the_current_verdict_round_trips(request_hash, report, changed):
    record = {**VERDICT, "request_hash": request_hash, "key_id": "key_1", "stream": None, "report": report,
              "catalog_changed": changed}
    assert schemas.decode(schemas.VERDICT, schemas.encode(schemas.VERDICT, record)) == record


def test_an_unknown_version_is_still_refused():
    payload = VERDICT_V1_HEADER[:2] + b"\x00" * 8 + b"\x00"
    with pytest.raises(schemas.SchemaMismatch, match="another schema"):
        schemas.decode(schemas.VERDICT, payload)


# A FrameBatch as every processor before the Arrow columns (FrameBatch version 2) wrote it.
FRAME_BATCH_V1 = {
    "request_id": "req_1", "org_id": "org_a", "thing_id": "thg_1", "type_version_id": "tdef_1",
    "version": 1718884800123, "frames": 2,
    "readings": {"ts": [1718884800000, 1718884801000], "metric_id": ["mdef_1", "mdef_2"],
                 "data_type": ["Long", "String"], "value": [2.0**60, 0.0], "value_long": [2**60, 0],
                 "value_string": ["", "ok"]},
    "locations": [{"ts": 1718884800000, "latitude": 55.6761, "longitude": 12.5683, "accuracy_m": 8.0}],
}
FRAME_BATCH_V1_HEADER = bytes.fromhex("c30158d4597a94a2823b")


def test_the_frames_history_file_is_the_schema_old_messages_name():
    assert written_with("frames.v1.avsc", FRAME_BATCH_V1)[:codec.HEADER_SIZE] == FRAME_BATCH_V1_HEADER


def test_a_frame_batch_of_version_1_reads_as_the_arrow_columns_version_2_carries():
    old = written_with("frames.v1.avsc", FRAME_BATCH_V1)
    new = frames.encode(FRAME_BATCH_V1)
    assert old[:codec.HEADER_SIZE] != new[:codec.HEADER_SIZE]
    from_old, from_new = frames.decode(old), frames.decode(new)
    assert from_old["readings"].equals(from_new["readings"]) and from_old["locations"].equals(from_new["locations"])
    assert from_old["readings"].num_rows == 2 and from_old["locations"].num_rows == 1
    assert {k: v for k, v in from_old.items() if k not in ("readings", "locations")} == {
        k: v for k, v in from_new.items() if k not in ("readings", "locations")}
