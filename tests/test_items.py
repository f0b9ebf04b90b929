"""Seed 002's rulebook as a pure function: items → stream_items rows, item keys, rejections."""

import orjson
import pytest

from processors.items import duplicate_path, stream_items
from sinks.stream_items import stream_items_columns


def envelope(items, item_key=None, body: bytes | None = None) -> dict:
    raw = body if body is not None else orjson.dumps({"itemKey": item_key, "items": items})
    return {"request_id": "req_1", "org_id": "org_a", "key_id": "key_1", "route": "stream_items",
            "stream": "sales", "received_at": 1775471400000, "body": raw}


SEED_ITEMS = [{"region": "North", "revenue": 142000, "target": 130000},
              {"region": "South", "revenue": 98000, "target": 110000},
              {"region": "East", "revenue": 156000, "target": 140000}]


def test_each_item_is_a_row_keyed_by_its_item_key_field():
    outcome = stream_items(envelope(SEED_ITEMS, "region"))
    assert outcome.verdict["http_status"] == 200 and outcome.verdict["status"] == "ingested"
    assert outcome.verdict["frames_received"] == outcome.verdict["frames_ingested"] == 3
    assert outcome.verdict["stream"] == "sales" and outcome.verdict["key_id"] == "key_1"
    [batch] = outcome.records
    assert batch["table"] == "stream_items_input"
    assert [r["item_key"] for r in batch["rows"]] == ["North", "South", "East"]
    assert [r["item_index"] for r in batch["rows"]] == [0, 1, 2]
    assert batch["rows"][0]["item"] == SEED_ITEMS[0] and batch["rows"][0]["stream"] == "sales"
    assert not outcome.dead_letters


def test_a_single_object_is_one_item_with_a_deterministic_generated_key():
    item = {"region": "North", "revenue": 142000, "target": 130000, "updated_at": "2026-04-06T10:30:00Z"}
    first, again = stream_items(envelope(item)), stream_items(envelope(item))
    assert first.records[0]["rows"][0]["item_key"] == "req_1/0"  # no X-Item-Key: request id and index
    assert again.records == first.records  # a replay writes the same rows: it overwrites, never duplicates


@pytest.mark.parametrize("value,key", [("N-1", "N-1"), (42, "42"), (1.5, "1.5"), (True, "true"),
                                       (None, "req_1/0")])
def test_scalar_item_keys_become_text_and_a_missing_one_is_generated(value, key):
    rows = stream_items(envelope([{"id": value, "x": 1}], "id")).records[0]["rows"]
    assert rows[0]["item_key"] == key
    assert stream_items(envelope([{"x": 1}], "id")).records[0]["rows"][0]["item_key"] == "req_1/0"


@pytest.mark.parametrize("items,field", [
    ([{"a": 1}, 5], "items[1]"),
    ([{"a": 1}, [{"a": 1}]], "items[1]"),
    ([{"id": {"nested": 1}}], "items[0].id"),
    ([{"id": "k" * 1025}], "items[0].id"),
    ([{"a": {"b": 1}, "a.b": 2}], "items[0]"),
    ([], "body"),
    ("text", "body"),
])
def test_a_broken_item_refuses_the_request_naming_its_index(items, field):
    outcome = stream_items(envelope(items, "id"))
    assert outcome.verdict["http_status"] == 400 and outcome.records == []
    [error] = outcome.verdict["errors"]
    assert error["code"] == "INVALID_PAYLOAD" and error["field"] == field
    assert outcome.dead_letters[0]["original"] == envelope(items, "id")["body"]  # replayable as sent


def test_bodies_that_are_not_the_route_document_are_refused():
    for body in (b"", b"{", b'[{"a": 1}]', b'{"itemKey": 5, "items": {}}'):
        assert stream_items(envelope(None, body=body)).verdict["http_status"] == 400


def test_duplicate_paths_follow_the_clickhouse_json_type():
    assert duplicate_path({"a": 1, "a.b": 2}) is None  # a leaf and a deeper leaf: both kept
    assert duplicate_path({"a.b": None, "a": {"b": 1}}) is None  # nulls store no path
    assert duplicate_path({"a.b": {}, "a": {"b": 1}}) is None  # nor do empty objects
    assert duplicate_path({"a.b": [1], "a": {"b": 2}}) == "a.b"
    assert duplicate_path({"a": {"": 1}, "a.": 2}) == "a."
    assert duplicate_path({"rows": [[{"x.y": 1, "x": {"y": 2}}]]}) == "x.y"  # objects in arrays too
    assert duplicate_path({"rows": [{"x": 1}, {"x": 2}]}) is None  # each its own document
    deep: dict = {"v": 1}
    for _ in range(1000):
        deep = {"a": deep}
    assert duplicate_path(deep) is None  # no recursion limit


def test_the_sink_writes_items_as_json_text_with_the_message_columns():
    outcome = stream_items(envelope(SEED_ITEMS[:2], "region"))
    message = {"request_id": "req_1", "org_id": "org_a", "table": "stream_items_input", "version": 1775471400000,
               "rows": orjson.dumps(outcome.records[0]["rows"])}
    columns = stream_items_columns([message, {**message, "table": "other"}])
    assert columns["item_key"] == ["North", "South"] and columns["org_id"] == ["org_a", "org_a"]
    assert [orjson.loads(i) for i in columns["item"]] == SEED_ITEMS[:2]
    assert columns["received_at"] == columns["version"] == [1775471400000] * 2
