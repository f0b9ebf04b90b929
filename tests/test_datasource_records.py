"""The data-source rulebook (seed 004) alone: schemas declared and inferred, the 400s
that name a record's index and field, and the row keys that make re-sends collapse."""

from __future__ import annotations

import orjson
import pytest

import schemas
from catalog.datasources import SCHEMA_KIND, timestamp_ms
from processors.judge import request_messages
from processors.datasource_records import judge_records
from processors.deciding_catalog import DecidingCatalog, StaleCatalog
from schemas.topics import CATALOG, MessageLimits

# Seed 004's two example bodies, as the seed shows them.
SEED_ONE = {"datasource_id": "67890", "data": [
    {"timestamp": "2025-01-01T12:00:00Z", "metric": "temperature", "value": 22.5}]}
SEED_BATCH = {"datasource_id": "67890", "data": [
    {"timestamp": "2025-01-01T10:00:00Z", "value": 21.2},
    {"timestamp": "2025-01-01T11:00:00Z", "value": 21.9},
    {"timestamp": "2025-01-01T12:00:00Z", "value": 22.5}]}


class Catalog:
    """A data source, and the schemas decided so far (as the processor's catalog holds them)."""

    def __init__(self, schema: dict | None = None) -> None:
        self.entities = {("datasource", "dsrc_1"): {"id": "dsrc_1", "name": "t", "externalId": "67890",
                                                    **({"schema": schema} if schema else {})}}

    def get(self, kind: str, entity_id: str, org_id: str | None = None) -> dict | None:
        return self.entities.get((kind, entity_id)) if org_id in (None, "org_a") else None

    def apply(self, outcome) -> None:
        for entity in outcome.catalog:
            self.entities[(entity["kind"], entity["id"])] = entity["body"]


def envelope(body: object, request_id: str = "req_1") -> dict:
    return {"request_id": request_id, "org_id": "org_a", "key_id": "key_1", "route": "datasource_insert",
            "received_at": 1_700_000_000_000, "thing_id": None, "stream": "dsrc_1", "template_id": None,
            "body": body if isinstance(body, bytes) else orjson.dumps(body)}


def error_of(outcome) -> tuple[int, str, str, str]:
    verdict = outcome.verdict
    first = verdict["errors"][0]
    return verdict["http_status"], first["code"], first["field"], first["message"]


def test_the_seed_bodies_infer_one_schema_in_either_order():
    for bodies in ((SEED_ONE, SEED_BATCH), (SEED_BATCH, SEED_ONE)):
        catalog = Catalog()
        for n, body in enumerate(bodies):
            outcome = judge_records(envelope(body, f"req_{n}"), catalog.get)
            assert outcome.verdict["http_status"] == 200, outcome.verdict
            catalog.apply(outcome)
        assert catalog.get(SCHEMA_KIND, "dsrc_1") == {
            "id": "dsrc_1", "fields": {"timestamp": "timestamp", "metric": "string", "value": "number"},
            "version": 2 if bodies[0] is SEED_BATCH else 1, "requestId": "req_1" if bodies[0] is SEED_BATCH
            else "req_0", "updatedAt": catalog.get(SCHEMA_KIND, "dsrc_1")["updatedAt"]}


def test_rows_carry_the_record_its_event_time_and_a_content_key():
    outcome = judge_records(envelope(SEED_BATCH), Catalog().get)
    [batch] = outcome.records
    assert batch["table"] == "datasource_records"
    rows = batch["rows"]
    assert [r["record_index"] for r in rows] == [0, 1, 2]
    assert [r["ts"] for r in rows] == [timestamp_ms(r["timestamp"]) for r in SEED_BATCH["data"]]
    assert rows[0]["ts"] == 1735725600000  # 2025-01-01T10:00:00Z
    assert orjson.loads(rows[2]["record"]) == SEED_BATCH["data"][2]
    # The same records sent again get the same keys; equal records within one request stay apart.
    again = judge_records(envelope(SEED_BATCH, "req_2"), Catalog().get).records[0]["rows"]
    assert [r["record_key"] for r in again] == [r["record_key"] for r in rows]
    twice = {"datasource_id": "67890", "data": [{"value": 1}, {"value": 1}]}
    keys = [r["record_key"] for r in judge_records(envelope(twice), Catalog().get).records[0]["rows"]]
    assert len(set(keys)) == 2 and keys[1] == keys[0] + "-1"


@pytest.mark.parametrize("data, field, code, words", [
    ([{"value": 1.5}, {"value": "high"}], "data[1].value", "SCHEMA_MISMATCH", "expected a number, got a string"),
    ([{"timestamp": "2025-01-01T00:00Z"}, {"timestamp": "yesterday"}], "data[1].timestamp", "SCHEMA_MISMATCH",
     "expected a timestamp"),
    ([{"value": 1}, {"value": True}], "data[1].value", "SCHEMA_MISMATCH", "got a boolean"),
    ([{"value": 1}, 7], "data[1]", "INVALID_RECORD", "must be a JSON object"),
    ([{"value": 1}, {}], "data[1]", "INVALID_RECORD", "at least one field"),
    ([{"tags": ["a"]}], "data[0].tags", "SCHEMA_MISMATCH", "nested objects and arrays"),
    ([{"value": 1, "": 2}], "data[0].", "SCHEMA_MISMATCH", "named with 1–200 characters"),
])
def test_a_record_off_the_schema_is_400_naming_its_index_and_field(data, field, code, words):
    outcome = judge_records(envelope({"datasource_id": "67890", "data": data}), Catalog().get)
    status, got_code, got_field, message = error_of(outcome)
    assert (status, got_code, got_field) == (400, code, field)
    assert message.startswith(field) and words in message
    assert outcome.records == [] and outcome.catalog == []  # all or nothing
    assert outcome.dead_letters[0]["stream"] == "dsrc_1"


def test_a_declared_schema_is_final():
    catalog = Catalog(schema={"timestamp": "timestamp", "value": "number"})
    assert judge_records(envelope(SEED_BATCH), catalog.get).verdict["http_status"] == 200
    outcome = judge_records(envelope(SEED_ONE), catalog.get)
    assert error_of(outcome)[:3] == (400, "UNKNOWN_FIELD", "data[0].metric")
    # Nulls and absent fields are fine; a declared type is enforced from the first record.
    assert judge_records(envelope({"datasource_id": "x", "data": [{"value": None}]}), catalog.get).catalog == []
    assert error_of(judge_records(envelope({"datasource_id": "x", "data": [{"value": "1"}]}), catalog.get))[:2] \
        == (400, "SCHEMA_MISMATCH")


def test_an_inferred_type_never_changes():
    catalog = Catalog()
    catalog.apply(judge_records(envelope(SEED_ONE), catalog.get))
    outcome = judge_records(envelope({"datasource_id": "67890", "data": [{"metric": 3}]}), catalog.get)
    assert error_of(outcome)[:3] == (400, "SCHEMA_MISMATCH", "data[0].metric")
    # A request that only uses known fields decides nothing.
    assert judge_records(envelope(SEED_BATCH), catalog.get).catalog == []


def test_malformed_bodies_and_unknown_data_sources():
    assert error_of(judge_records(envelope(b"{nope"), Catalog().get))[:2] == (400, "INVALID_PAYLOAD")
    assert error_of(judge_records(envelope({"datasource_id": "x", "data": {}}), Catalog().get))[:3] == (
        400, "INVALID_PAYLOAD", "data")
    unknown = envelope(SEED_ONE)
    unknown["stream"] = "dsrc_2"
    assert error_of(judge_records(unknown, Catalog().get))[:2] == (404, "DATASOURCE_NOT_FOUND")


@pytest.mark.parametrize("text, expected", [
    ("2025-01-01T12:00:00Z", 1735732800000), ("2025-01-01T14:00:00+02:00", 1735732800000),
    ("2025-01-01 12:00", 1735732800000), ("2025-01-01T12:00:00.5Z", 1735732800500),
    ("2025-01-01", None), ("20250101T120000", None), ("2025-13-01T00:00Z", None), ("3000-01-01T00:00Z", None),
])
def test_timestamps_are_iso_8601_date_times(text, expected):
    assert timestamp_ms(text) == expected


def test_a_processor_decides_a_schema_only_on_a_caught_up_view():
    class View(Catalog):
        def resolution(self, version_id):
            return None

    view = View()
    catalog = DecidingCatalog(view)
    outcome = judge_records(envelope(SEED_ONE), catalog.get)
    with pytest.raises(StaleCatalog):
        catalog.require_fresh()
    catalog.fresh = True
    catalog.remember(outcome.catalog)
    # Its own decision is seen before the view applies it, and yields to a newer one in the view.
    assert catalog.get(SCHEMA_KIND, "dsrc_1", "org_a")["version"] == 1
    assert catalog.get(SCHEMA_KIND, "dsrc_1", "org_b") is None
    view.entities[(SCHEMA_KIND, "dsrc_1")] = {"id": "dsrc_1", "fields": {"x": "string"}, "version": 2}
    assert catalog.get(SCHEMA_KIND, "dsrc_1", "org_a")["fields"] == {"x": "string"}


def test_the_processor_writes_a_decided_schema_to_the_catalog_only_when_caught_up():
    class View(Catalog):
        def resolution(self, version_id):
            return None

    catalog = DecidingCatalog(View())
    limits = MessageLimits.for_body(1_048_576)
    with pytest.raises(StaleCatalog):  # the processor catches up to the catalog's end, then judges again
        request_messages(b"", envelope(SEED_ONE), catalog, seen=None, limits=limits)
    catalog.fresh = True
    messages = request_messages(b"", envelope(SEED_ONE), catalog, seen=None, limits=limits)
    [(key, value)] = [(key, value) for topic, key, value in messages if topic == CATALOG]
    assert key == b"datasource_schema/dsrc_1"
    written = schemas.decode(schemas.CATALOG_RECORD, value)
    assert written["org_id"] == "org_a" and orjson.loads(written["body"])["version"] == 1
    # The next request sees the decision before the view applies it, and decides nothing more.
    later = request_messages(b"", envelope(SEED_BATCH, "req_2"), catalog, seen=None, limits=limits)
    assert not [m for m in later if m[0] == CATALOG]
