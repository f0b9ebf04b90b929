"""Avro single-object encoding round-trips for every topic's schema."""

import pytest

import schemas
from schemas import frames

ENVELOPE = {
    "request_id": "req_1", "org_id": "org_a", "key_id": "key_1", "route": "thing_data",
    "received_at": 1718884800123, "thing_id": "thg_1", "stream": None, "template_id": None,
    "idempotency_key": "abc", "content_type": "application/json", "catalog_offset": 41,
    "body": b'{"frames": []}',
}
FRAMES = {  # as a rulebook builds it; schemas.frames turns the columns into Arrow
    "request_id": "req_1", "org_id": "org_a", "thing_id": "thg_1", "type_version_id": "tdef_1",
    "version": 1718884800123, "frames": 1,
    "readings": {"ts": [1718884800000, 1718884800000], "metric_id": ["mdef_1", "mdef_2"],
                 "data_type": ["Long", "String"], "value": [2.0**60, 0.0], "value_long": [2**60, 0],
                 "value_string": ["", "ok"]},
    "locations": [{"ts": 1718884800000, "latitude": 55.6761, "longitude": 12.5683, "accuracy_m": None}],
}
# The Avro envelope itself: the columns are opaque bytes to it.
FRAMES_ENVELOPE = {**FRAMES, "readings": b"arrow", "locations": b""}
VERDICT = {
    "request_id": "req_1", "org_id": "org_a", "thing_id": None, "route": "stream_items", "key_id": "key_1",
    "stream": "sales", "status": "rejected", "http_status": 400, "frames_received": 3, "frames_ingested": 0,
    "metrics": [], "errors": [{"code": "INVALID_PAYLOAD", "message": "m", "field": "[1].region"}],
    "duplicate_of": None, "received_at": 1718884800123, "processed_at": 1718884800200, "request_hash": None,
    "report": None,
    "catalog_changed": False,
}
TEMPLATE_VERDICT = {
    **VERDICT, "thing_id": "thg_1", "route": "thing_template", "stream": None, "status": "ingested",
    "http_status": 200, "frames_received": 2, "frames_ingested": 1, "metrics": ["moduleSoC"], "errors": [],
    "report": '{"previewOnly":false,"templateId":"tmpl_1","templateRevision":7,"recordsParsed":2,'
              '"readingsWritten":1,"metricValuesWritten":1,"recordsSkipped":[{"index":1,'
              '"reason":"invalid_timestamp","value":"n/a"}]}',
}
DEAD_LETTER = {
    "request_id": "req_1", "org_id": "org_a", "key_id": None, "route": "thing_data", "thing_id": "thg_1",
    "stream": None, "template_id": None, "received_at": 1718884800123, "item_index": -1,
    "reason": "UNKNOWN_METRIC", "detail": "d", "original": b"\xff{", "rejected_at": 1718884800200,
}
CATALOG_RECORD = {"kind": "metric", "id": "mdef_1", "org_id": "org_a", "body": '{"name": "soc"}',
                  "updated_at": 1718884800123}
RECORD_BATCH = {"request_id": "req_1", "org_id": "org_a", "table": "stream_items", "version": 1718884800123,
                "rows": b'[{"item_key": "North"}]'}
EVERY_SCHEMA = [(schemas.RAW_ENVELOPE, ENVELOPE), (schemas.FRAME_BATCH, FRAMES_ENVELOPE), (schemas.VERDICT, VERDICT),
                (schemas.DEAD_LETTER, DEAD_LETTER), (schemas.CATALOG_RECORD, CATALOG_RECORD),
                (schemas.RECORD_BATCH, RECORD_BATCH)]


def test_every_schema_of_the_codec_is_round_tripped_here():
    from schemas import codec

    assert {name for name, _ in EVERY_SCHEMA} == set(codec._FILES)


@pytest.mark.parametrize("name,record", EVERY_SCHEMA)
def test_round_trip(name, record):
    payload = schemas.encode(name, record)
    assert payload[:2] == b"\xc3\x01"
    assert schemas.decode(name, payload) == record


def test_a_template_verdict_round_trips_with_its_report():
    assert schemas.decode(schemas.VERDICT, schemas.encode(schemas.VERDICT, TEMPLATE_VERDICT)) == TEMPLATE_VERDICT


def test_other_schema_is_refused():
    payload = schemas.encode(schemas.RAW_ENVELOPE, ENVELOPE)
    with pytest.raises(schemas.SchemaMismatch, match="another schema"):
        schemas.decode(schemas.FRAME_BATCH, payload)


def test_plain_json_is_not_avro():
    assert not schemas.is_avro(b'{"frames": []}')
    with pytest.raises(schemas.SchemaMismatch, match="not an Avro"):
        schemas.decode(schemas.RAW_ENVELOPE, b'{"frames": []}')


def as_lists(batch) -> dict:
    """Arrow columns back as a rulebook's lists (event times in ms)."""
    return {name: (column.cast("int64") if name == "ts" else column).to_pylist()
            for name, column in zip(batch.schema.names, batch.columns)}


def test_frames_round_trip_as_arrow_columns():
    decoded = frames.decode(frames.encode(FRAMES))
    assert {k: v for k, v in decoded.items() if k not in ("readings", "locations")} == {
        k: v for k, v in FRAMES.items() if k not in ("readings", "locations")}
    assert decoded["readings"].schema == frames.READINGS and as_lists(decoded["readings"]) == FRAMES["readings"]
    locations = as_lists(decoded["locations"])
    assert [dict(zip(locations, row)) for row in zip(*locations.values())] == FRAMES["locations"]


def test_frames_without_locations_carry_no_arrow_for_them():
    payload = frames.encode({**FRAMES, "locations": []})
    assert schemas.decode(schemas.FRAME_BATCH, payload)["locations"] == b""
    assert frames.decode(payload)["locations"].num_rows == 0


def test_frames_with_a_broken_arrow_body_are_refused():
    payload = schemas.encode(schemas.FRAME_BATCH, {**FRAMES_ENVELOPE, "readings": b"\xff" * 64})
    with pytest.raises(ValueError):
        frames.decode(payload)
