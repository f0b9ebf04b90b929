"""The sinks' pure column builders: decoded verdicts and dead letters → warehouse columns.

Records go through the Avro codec first, so the builders are tested on exactly
what the sinks decode from their topics.
"""

import json

import schemas
from sinks.ingest_log import COLUMNS as INGEST_LOG_COLUMNS
from sinks.ingest_log import ingest_log_columns
from sinks.rejects import COLUMNS as REJECTS_COLUMNS
from sinks.rejects import rejects_columns

INGESTED = {
    "request_id": "req_1", "org_id": "org_a", "thing_id": "thg_1", "route": "thing_data",
    "status": "ingested", "http_status": 200, "frames_received": 2, "frames_ingested": 2,
    "metrics": ["moduleSoC", "status"], "errors": [], "received_at": 1718884800123, "processed_at": 1718884800456,
}
REJECTED = {
    **INGESTED, "request_id": "req_2", "thing_id": None, "status": "rejected", "http_status": 400,
    "frames_ingested": 0, "metrics": [],
    "errors": [{"code": "UNKNOWN_METRIC", "message": "metric 'x' is not defined on the thing's type",
                "field": "frames[0].metrics.x"}],
}
DEAD = {
    "request_id": "req_2", "org_id": "org_a", "key_id": "key_1", "route": "thing_data", "thing_id": "thg_1",
    "stream": None, "template_id": None, "received_at": 1718884800123, "item_index": -1,
    "reason": "UNKNOWN_METRIC", "detail": "metric 'x' is not defined", "original": b'{"frames": []}',
    "rejected_at": 1718884800456,
}


def decoded(name: str, record: dict) -> dict:
    return schemas.decode(name, schemas.encode(name, record))


def test_ingest_log_columns_one_row_per_verdict():
    columns = ingest_log_columns([decoded(schemas.VERDICT, INGESTED), decoded(schemas.VERDICT, REJECTED)])
    assert tuple(columns) == INGEST_LOG_COLUMNS
    assert all(len(values) == 2 for values in columns.values())
    assert columns["request_id"] == ["req_1", "req_2"]
    assert columns["thing_id"] == ["thg_1", ""]  # not Nullable in the table
    assert columns["status"] == ["ingested", "rejected"]
    assert columns["http_status"] == [200, 400]
    assert columns["frames_received"] == [2, 2] and columns["frames_ingested"] == [2, 0]
    assert columns["metrics"] == [["moduleSoC", "status"], []]
    assert columns["received_at"] == [1718884800123] * 2
    assert columns["processed_at"] == [1718884800456] * 2


def test_ingest_log_errors_are_one_json_string_per_row():
    columns = ingest_log_columns([decoded(schemas.VERDICT, INGESTED), decoded(schemas.VERDICT, REJECTED)])
    assert all(isinstance(text, str) for text in columns["errors"])
    assert json.loads(columns["errors"][0]) == []
    assert json.loads(columns["errors"][1]) == REJECTED["errors"]


def test_ingest_log_keeps_a_template_report_and_empty_otherwise():
    report = '{"recordsParsed":2,"readingsWritten":1}'
    columns = ingest_log_columns([decoded(schemas.VERDICT, INGESTED),
                                  decoded(schemas.VERDICT, {**INGESTED, "route": "thing_template", "report": report})])
    assert columns["report"] == ["", report]


def test_rejects_columns_carry_what_a_reader_needs():
    columns = rejects_columns([decoded(schemas.DEAD_LETTER, DEAD)])
    assert tuple(columns) == REJECTS_COLUMNS
    assert columns == {
        "request_id": ["req_2"], "org_id": ["org_a"], "thing_id": ["thg_1"], "route": ["thing_data"],
        "item_index": [-1], "reason": ["UNKNOWN_METRIC"], "detail": ["metric 'x' is not defined"],
        "original": ['{"frames": []}'], "received_at": [1718884800123], "rejected_at": [1718884800456],
    }


def test_rejects_original_is_text_even_when_the_body_is_not_utf8():
    undecodable = {**DEAD, "request_id": "", "org_id": "", "route": "unknown", "thing_id": None,
                   "original": b"\xc3\x01\xff{"}
    columns = rejects_columns([decoded(schemas.DEAD_LETTER, undecodable)])
    assert columns["original"] == ["\ufffd\x01\ufffd{"]
    assert columns["thing_id"] == [""]


def test_no_records_give_empty_columns():
    assert ingest_log_columns([]) == {name: [] for name in INGEST_LOG_COLUMNS}
    assert rejects_columns([]) == {name: [] for name in REJECTS_COLUMNS}


def test_readings_columns_repeat_each_batchs_fields_per_value():
    from schemas import frames
    from sinks.readings import COLUMNS, LOCATION_COLUMNS, locations_columns, readings_columns

    batch = {"request_id": "req_1", "org_id": "org_a", "thing_id": "thg_1", "type_version_id": "tdef_1",
             "version": 7, "frames": 2,
             "readings": {"ts": [1, 1, 2], "metric_id": ["m1", "m2", "m1"], "data_type": ["Double"] * 3,
                          "value": [1.0, 2.0, 3.0], "value_long": [0, 0, 0], "value_string": ["", "", ""]},
             "locations": [{"ts": 2, "latitude": 1.0, "longitude": 2.0, "accuracy_m": None}]}
    decoded = [frames.decode(frames.encode(batch)), frames.decode(frames.encode({**batch, "thing_id": "thg_2",
                                                                                 "locations": []}))]
    columns = readings_columns(decoded)
    assert tuple(columns) == COLUMNS and all(len(v) == 6 for v in columns.values())
    assert columns["thing_id"].to_pylist() == ["thg_1"] * 3 + ["thg_2"] * 3
    assert columns["value"].to_pylist() == [1.0, 2.0, 3.0] * 2
    assert columns["version"].to_pylist() == [7] * 6
    located = locations_columns(decoded)
    assert tuple(located) == LOCATION_COLUMNS and located["latitude"].to_pylist() == [1.0]
    assert located["thing_id"].to_pylist() == ["thg_1"] and located["accuracy_m"].to_pylist() == [None]


def test_no_frames_and_no_locations_give_no_columns():
    from schemas import frames
    from sinks.readings import locations_columns, readings_columns

    assert readings_columns([]) == {} and locations_columns([]) == {}
    empty = frames.decode(frames.encode({"request_id": "r", "org_id": "o", "thing_id": "t", "type_version_id": "",
                                         "version": 1, "frames": 0, "readings": {
                                             "ts": [], "metric_id": [], "data_type": [], "value": [],
                                             "value_long": [], "value_string": []}, "locations": []}))
    assert locations_columns([empty]) == {}
