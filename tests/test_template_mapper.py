"""The template rulebook alone (processors/templates.py): a raw payload through a pinned
revision to readings columns and the seed's report, without services."""

from __future__ import annotations

import secrets

import jmespath
import orjson
import pytest

from schemas import frames
from catalog import templates as catalog_templates
from catalog.resolution import build_table
from processors.templates import MAX_RECORDS, map_template

METRICS = {
    "mdef_soc": {"name": "moduleSoC", "dataType": "Double"},
    "mdef_status": {"name": "status", "dataType": "Long"},
}
TABLE = build_table(list(METRICS), METRICS)
THING = {"id": "thg_1", "thingTypeVersionId": "tdef_1"}


def revision(template_id: str | None = None, number: int = 1, **changes) -> dict:
    # A fresh id per revision body: compiled revisions are cached by id, as revisions never change.
    return {"id": template_id or f"tmpl_{secrets.token_hex(4)}", "revision": number, "name": "export",
            "target": "ThingData", "records": "data.readings", "timestamp": {"path": "ts", "format": "epochMillis"},
            "metrics": {"moduleSoC": "soc", "status": "state.code"}, **changes}


def judge(body: object, rev: dict | None = None, preview: bool = False, raw: bytes | None = None):
    rev = rev or revision()
    pinned = f"{rev['id']}@{rev['revision']}"
    entities = {("template_revision", pinned): rev, ("thing", "thg_1"): THING}
    envelope = {"request_id": "req_1", "org_id": "org_a", "key_id": "key_1", "route": "thing_template",
                "received_at": 1718884800000, "thing_id": "thg_1", "stream": None, "template_id": pinned,
                "body": raw if raw is not None else orjson.dumps(body)}
    return map_template(envelope, lambda kind, entity_id, org=None: entities.get((kind, entity_id)),
                        lambda version: TABLE if version == "tdef_1" else None, preview=preview)


def rows(readings: dict[str, list]) -> list[tuple]:
    return list(zip(*(readings[name] for name in frames.READINGS.names)))


def report(outcome) -> dict:
    return orjson.loads(outcome.verdict["report"])


GOOD_AND_BAD = {"data": {"readings": [
    {"ts": 1718884800000, "soc": 87.4, "state": {"code": 1}},
    {"ts": "n/a", "soc": 80.0},
    {"ts": 1718884801000, "soc": "high"},
    {"soc": 1.0},
    {"ts": 1718884802000, "soc": "86.5"},
    {"ts": 1718884803000, "other": 1},
]}}


def test_good_records_are_written_and_bad_ones_skipped_with_their_reason():
    outcome = judge(GOOD_AND_BAD)
    assert report(outcome) == {
        "previewOnly": False, "templateId": outcome.verdict["report"] and report(outcome)["templateId"],
        "templateRevision": 1, "recordsParsed": 6,
        "readingsWritten": 2, "metricValuesWritten": 3, "recordsSkipped": [
            {"index": 1, "reason": "invalid_timestamp", "value": "n/a"},
            {"index": 2, "reason": "invalid_value", "value": "high"},
            {"index": 3, "reason": "missing_timestamp", "value": None},
            {"index": 5, "reason": "no_metric_values", "value": None}]}
    [batch] = outcome.frames
    # Every column of every row (ts, metric_id, data_type, value, value_long, value_string), metric by metric.
    assert rows(batch["readings"]) == [
        (1718884800000, "mdef_soc", "Double", 87.4, 0, ""),
        (1718884802000, "mdef_soc", "Double", 86.5, 0, ""),
        (1718884800000, "mdef_status", "Long", 1.0, 1, "")]
    assert outcome.verdict["http_status"] == 200 and outcome.verdict["metrics"] == ["moduleSoC", "status"]
    # One dead letter for the skipped records, with the whole body, so a replay maps it afresh.
    [dead] = outcome.dead_letters
    assert dead["reason"] == "RECORDS_SKIPPED" and dead["item_index"] == 1
    assert dead["original"] == orjson.dumps(GOOD_AND_BAD) and "4 record(s) skipped" in dead["detail"]


def test_preview_writes_nothing_and_dead_letters_nothing():
    outcome = judge(GOOD_AND_BAD, preview=True)
    assert outcome.frames == [] and outcome.dead_letters == []
    assert report(outcome)["previewOnly"] is True and report(outcome)["readingsWritten"] == 2
    assert outcome.verdict["status"] == "previewed"


def test_a_metric_not_on_the_thing_type_skips_the_record():
    rev = revision(metrics={"moduleSoC": "soc", "humidity": "hum"})
    outcome = judge({"data": {"readings": [{"ts": 1, "soc": 1, "hum": 3}, {"ts": 2, "soc": 2}]}}, rev)
    assert report(outcome)["recordsSkipped"] == [{"index": 0, "reason": "unknown_metric", "value": "humidity"}]
    assert report(outcome)["readingsWritten"] == 1


@pytest.mark.parametrize("fmt,good,bad", [
    ("epochMillis", [1718884800000, "1718884800000", 1718884800000.0], ["2024-06-20T12:00:00Z", 1.5, True]),
    ("epochSeconds", [1718884800, 1718884800.0, "1718884800"], [1718884800000, "2024-06-20T12:00:00Z"]),
    ("iso8601", ["2024-06-20T12:00:00Z", "2024-06-20T14:00:00+02:00", "2024-06-20T12:00:00.000+0000"],
     ["2024-06-20T12:00:00", 1718884800000, "20 June 2024"]),
])
def test_timestamp_formats_and_mixed_formats(fmt, good, bad):
    rev = revision(timestamp={"path": "ts", "format": fmt})
    records = [{"ts": ts, "soc": 1} for ts in good + bad]
    outcome = judge({"data": {"readings": records}}, rev)
    assert outcome.frames[0]["readings"]["ts"] == [1718884800000] * len(good)
    assert [(s["index"], s["reason"]) for s in report(outcome)["recordsSkipped"]] == [
        (len(good) + i, "invalid_timestamp") for i in range(len(bad))]


@pytest.mark.parametrize("raw,status,code", [
    (b"{not json", 400, "INVALID_PAYLOAD"),
    (orjson.dumps({"data": {"readings": 42}}), 400, "RECORDS_NOT_AN_ARRAY"),
    (orjson.dumps({"data": {"readings": {"ts": 1}}}), 400, "RECORDS_NOT_AN_ARRAY"),
    (orjson.dumps({"elsewhere": []}), 400, "RECORDS_NOT_FOUND"),
    (orjson.dumps({"data": {"readings": [{"ts": 1, "soc": 1}] * (MAX_RECORDS + 1)}}), 400, "TOO_MANY_RECORDS"),
])
def test_bad_payloads_get_a_verdict_and_a_dead_letter(raw, status, code):
    outcome = judge(None, raw=raw)
    assert outcome.verdict["http_status"] == status and outcome.verdict["errors"][0]["code"] == code
    assert outcome.verdict["errors"][0]["field"] in ("body", "records") and outcome.frames == []
    assert [d["reason"] for d in outcome.dead_letters] == [code]
    assert judge(None, raw=raw, preview=True).dead_letters == []


def test_a_thing_without_type_is_424_and_an_unknown_revision_404():
    rev = revision()
    pinned = f"{rev['id']}@1"
    envelope = {"request_id": "req_1", "org_id": "org_a", "route": "thing_template", "received_at": 1,
                "thing_id": "thg_2", "template_id": pinned, "body": b"{}"}
    untyped = {("template_revision", pinned): rev, ("thing", "thg_2"): {"id": "thg_2"}}
    outcome = map_template(envelope, lambda k, i, o=None: untyped.get((k, i)), lambda v: None)
    assert outcome.verdict["http_status"] == 424
    outcome = map_template({**envelope, "template_id": f"{rev['id']}@9"}, lambda k, i, o=None: untyped.get((k, i)),
                           lambda v: None)
    assert outcome.verdict["http_status"] == 404 and outcome.verdict["errors"][0]["code"] == "TEMPLATE_NOT_FOUND"


def test_a_function_failing_on_one_record_skips_only_that_record():
    rev = revision(metrics={"moduleSoC": "abs(soc)"})
    outcome = judge({"data": {"readings": [{"ts": 1, "soc": -2}, {"ts": 2, "soc": "x"}]}}, rev)
    assert report(outcome)["readingsWritten"] == 1
    assert report(outcome)["recordsSkipped"][0]["reason"] == "expression_failed"


def test_expressions_are_compiled_once_per_revision(monkeypatch):
    calls = []
    real = jmespath.compile
    monkeypatch.setattr(catalog_templates.jmespath, "compile", lambda e: calls.append(e) or real(e))
    rev = revision(template_id="tmpl_once")
    for _ in range(3):
        judge(GOOD_AND_BAD, rev)
    assert sorted(calls) == ["data.readings", "soc", "state.code", "ts"]
    judge(GOOD_AND_BAD, revision(template_id="tmpl_once", number=2))  # a new revision compiles anew
    assert len(calls) == 8


def test_an_empty_record_list_is_an_empty_report():
    outcome = judge({"data": {"readings": []}})
    assert report(outcome)["recordsParsed"] == 0 and outcome.verdict["status"] == "ingested"
    assert outcome.frames == [] and outcome.dead_letters == []


def test_a_template_named_without_revision_maps_with_its_current_one():
    rev = revision(number=3)
    entities = {("template", rev["id"]): rev, ("thing", "thg_1"): THING}
    envelope = {"request_id": "req_1", "org_id": "org_a", "route": "thing_template", "received_at": 1,
                "thing_id": "thg_1", "template_id": rev["id"],
                "body": orjson.dumps({"data": {"readings": [{"ts": 1, "soc": 1}]}})}
    outcome = map_template(envelope, lambda k, i, o=None: entities.get((k, i)), lambda v: TABLE)
    assert report(outcome)["templateRevision"] == 3 and report(outcome)["readingsWritten"] == 1


def test_the_pinned_revision_is_used_whatever_the_current_one_is():
    """An update accepted after the request (the edge pinned @1) does not change its mapping."""
    first = revision(metrics={"moduleSoC": "soc"})
    current = {**first, "revision": 2, "metrics": {"moduleSoC": "other"}}
    entities = {("template", first["id"]): current, ("template_revision", f"{first['id']}@1"): first,
                ("template_revision", f"{first['id']}@2"): current, ("thing", "thg_1"): THING}
    envelope = {"request_id": "req_1", "org_id": "org_a", "route": "thing_template", "received_at": 1,
                "thing_id": "thg_1", "template_id": f"{first['id']}@1",
                "body": orjson.dumps({"data": {"readings": [{"ts": 1, "soc": 5}]}})}
    outcome = map_template(envelope, lambda k, i, o=None: entities.get((k, i)), lambda v: TABLE)
    assert report(outcome)["templateRevision"] == 1 and outcome.frames[0]["readings"]["value"] == [5.0]
