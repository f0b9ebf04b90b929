"""The pure parts of request isolation, without services: hostile values become
rejections (bounded, never raised), oversized frame batches are split under a
byte budget losing nothing, a failure while handling one request is that
request's verdict, and the message limits fit the edge's largest body."""

from __future__ import annotations

import orjson
import pyarrow as pa
import pytest

import schemas
from processors.judge import request_messages
from processors.outcome import MAX_FIELD_CHARS, MAX_MESSAGE_CHARS
from processors.splitting import encode_frame_batch
from schemas import frames
from schemas.topics import SPECS, MessageLimits, topic_configs
from tests.test_normalize import TABLE, THING, envelope, run

KIB = 1024
DEEP = b"[" * 1000 + b"1" + b"]" * 1000


def raw_body(metrics: bytes) -> bytes:
    return b'{"frames":[{"timestamp":1718884800000,"metrics":{' + metrics + b"}}]}"


@pytest.mark.parametrize("metrics,code", [
    (b'"moduleSoC":' + DEEP, "INVALID_VALUE"),
    (b'"enabled":' + DEEP, "INVALID_VALUE"),  # Boolean: its coercion error shows the value
    (b'"mode":' + DEEP, "INVALID_VALUE"),
    (b'"moduleSoC":"' + b"x" * 900 * KIB + b'"', "INVALID_VALUE"),
    (b'"status":"' + b"9" * 900 * KIB + b'"', "INVALID_VALUE"),  # an int too long to parse
    (b'"mode":"' + b"x" * 900 * KIB + b'"', "INVALID_VALUE"),  # not an enum value
    (b'"' + b"n" * 900 * KIB + b'":1', "UNKNOWN_METRIC"),
    (b'"moduleSoC":' + b"[" * 2000 + b"]" * 2000, "INVALID_PAYLOAD"),  # beyond the JSON parser's depth
])
def test_hostile_values_are_bounded_rejections(metrics, code):
    outcome = run(raw_body(metrics))
    error = outcome.verdict["errors"][0]
    assert error["code"] == code and outcome.frames == []
    assert len(error["message"]) <= MAX_MESSAGE_CHARS and len(error["field"] or "") <= MAX_FIELD_CHARS
    dead = outcome.dead_letters[0]
    assert dead["reason"] == code and dead["detail"] == error["message"] and dead["original"] == raw_body(metrics)
    schemas.encode(schemas.VERDICT, outcome.verdict)
    schemas.encode(schemas.DEAD_LETTER, dead)


def batch_of(readings: int, locations: int = 0, text: str = "") -> dict:
    return {
        "request_id": "req_1", "org_id": "org_a", "thing_id": "thg_1", "type_version_id": "tdef_1",
        "version": 1718884800999, "frames": readings,
        "readings": {"ts": list(range(readings)), "metric_id": [f"mdef_{i % 6:020d}" for i in range(readings)],
                     "data_type": ["String" if text else "Double"] * readings,
                     "value": [i / 3 for i in range(readings)],
                     "value_long": [0] * readings, "value_string": [text] * readings},
        "locations": [{"ts": i, "latitude": 1.0, "longitude": 2.0, "accuracy_m": None} for i in range(locations)],
    }


def rejoined(messages: list[bytes]) -> dict:
    """The messages' parts as one batch, shaped as a rulebook builds it (event times in ms)."""
    parts = [frames.decode(m) for m in messages]
    for part in parts:
        assert {k: v for k, v in part.items() if k not in ("readings", "locations")} == {
            k: v for k, v in parts[0].items() if k not in ("readings", "locations")}
    readings = pa.Table.from_batches([p["readings"] for p in parts])
    locations = pa.Table.from_batches([p["locations"] for p in parts])
    return {**parts[0], "readings": _as_lists(readings),
            "locations": _as_lists(locations, by_row=True)}


def _as_lists(table: pa.Table, by_row: bool = False):
    table = table.set_column(0, "ts", table.column("ts").cast(pa.int64()))
    return table.to_pylist() if by_row else table.to_pydict()


@pytest.mark.parametrize("readings,locations,text", [
    (42_000, 7000, ""),  # 7,000 frames of six metrics, located: ~2.6 MB encoded
    (5000, 0, "v" * 300),  # uneven: wide string values
    (0, 40_000, ""),  # locations only
])
def test_splitter_keeps_every_reading_and_each_part_under_budget(readings, locations, text):
    budget = 256 * KIB
    batch = batch_of(readings, locations, text)
    assert len(frames.encode(batch)) > 2 * budget
    messages = encode_frame_batch(batch, budget)
    assert len(messages) > 2 and all(len(m) <= budget for m in messages)
    assert rejoined(messages) == batch


def test_splitter_sends_a_small_batch_whole_and_an_oversized_reading_alone():
    assert len(encode_frame_batch(batch_of(10), 256 * KIB)) == 1
    big = batch_of(3, text="v" * 300 * KIB)
    messages = encode_frame_batch(big, 256 * KIB)
    assert len(messages) == 3 and rejoined(messages)["readings"]["ts"] == [0, 1, 2]


LIMITS = MessageLimits.for_body(1_048_576)


class Catalog:
    """The two catalog reads a rulebook makes (processors.rulebooks.Catalog)."""

    def __init__(self, thing_lookup=lambda org, tid: THING) -> None:
        self.thing_lookup = thing_lookup

    def get(self, kind, entity_id, org_id=None):
        return self.thing_lookup(org_id, entity_id) if kind == "thing" else None

    def resolution(self, version):
        return TABLE if version == "tdef_1" else None


def test_a_failure_while_handling_a_request_is_its_own_internal_error():
    def broken(org, tid):
        raise RecursionError("maximum recursion depth exceeded")

    body = orjson.dumps({"frames": [{"timestamp": 1, "metrics": {"status": 1}}]})
    messages = request_messages(b"", envelope(body), Catalog(broken), seen=None, limits=LIMITS)
    assert [topic for topic, _, _ in messages] == ["deadletter", "results"]
    dead = schemas.decode(schemas.DEAD_LETTER, messages[0][2])
    verdict = schemas.decode(schemas.VERDICT, messages[1][2])
    assert dead["reason"] == "INTERNAL_ERROR" and "RecursionError" in dead["detail"] and dead["original"] == body
    assert verdict["http_status"] == 500 and verdict["errors"][0]["code"] == "INTERNAL_ERROR"
    assert messages[0][1] == messages[1][1] == b"req_1"


def test_a_large_request_is_split_and_its_verdict_follows_its_frames():
    body = orjson.dumps({"frames": [{"timestamp": 1718884800000 + i, "metrics": {
        "status": i, "moduleSoC": 1.5, "enabled": True, "mode": "idle"}} for i in range(7000)]})
    messages = request_messages(b"", envelope(body), Catalog(), seen=None, limits=LIMITS)
    topics = [topic for topic, _, _ in messages]
    assert topics[-1] == "results" and set(topics[:-1]) == {"frames"} and len(topics) > 2
    assert all(len(value) <= LIMITS.frames_budget for _, _, value in messages)
    assert len(rejoined([value for topic, _, value in messages if topic == "frames"])["readings"]["ts"]) == 28_000


def test_limits_fit_the_largest_body_and_its_dead_letter():
    max_body = 1_048_576
    envelope_ = {"request_id": "req_" + "0" * 24, "org_id": "org_" + "0" * 20, "key_id": "key_" + "0" * 20,
                 "route": "thing_data", "received_at": 1718884800000, "thing_id": "thg_" + "0" * 20,
                 "stream": None, "template_id": None, "idempotency_key": "k" * 255,
                 "content_type": "application/json; " + "x" * 8 * KIB, "catalog_offset": 2**40,
                 "body": b"b" * max_body}
    raw = schemas.encode(schemas.RAW_ENVELOPE, envelope_)
    assert len(raw) + 1024 <= LIMITS.raw < LIMITS.output
    # an undecodable raw message of the largest size is dead-lettered whole
    messages = request_messages(b"x" * LIMITS.raw, "not an envelope", Catalog(), seen=None, limits=LIMITS)
    assert messages[0][0] == "deadletter" and len(messages[0][2]) + 1024 <= LIMITS.output
    configs = {spec.logical: topic_configs(spec, LIMITS)["max.message.bytes"] for spec in SPECS}
    assert configs["raw"] == str(LIMITS.raw) and configs["deadletter"] == configs["frames"] == str(LIMITS.output)


def test_an_output_too_large_for_a_message_is_the_requests_too_large():
    limits = MessageLimits(raw=2000, output=3000, frames_budget=100_000)  # frames may not be split small enough
    body = orjson.dumps({"frames": [{"timestamp": 1718884800000 + i, "metrics": {
        "status": i, "moduleSoC": 1.5, "enabled": True, "mode": "idle"}} for i in range(30)]})
    messages = request_messages(b"", envelope(body), Catalog(), seen=None, limits=limits)
    assert [topic for topic, _, _ in messages] == ["deadletter", "results"]
    assert schemas.decode(schemas.DEAD_LETTER, messages[0][2])["reason"] == "TOO_LARGE"
    assert schemas.decode(schemas.VERDICT, messages[1][2])["errors"][0]["code"] == "TOO_LARGE"
