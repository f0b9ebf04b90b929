"""An upgrade with messages in flight: frames written by an older processor
(FrameBatch version 1) still land, next to version 2 frames, through the real
sink into the real warehouse."""

from __future__ import annotations

import secrets

from confluent_kafka import Producer

from schemas import frames
from tests.conftest import eventually
from tests.test_codec_history import FRAME_BATCH_V1, written_with


def rows(api, stack, things: tuple[str, str]) -> list:
    reply = api.post("/v2/admin/sql", json={"sql": (
        f"SELECT thing_id, metric_id, toUnixTimestamp64Milli(ts), value_long, value_string, request_id "
        f"FROM {stack.settings.database}.readings WHERE thing_id IN {things} ORDER BY request_id, metric_id")})
    assert reply.status_code == 200, reply.text
    return reply.json()["rows"]


def test_a_version_1_frame_batch_in_the_topic_lands_beside_version_2(api, stack):
    token = secrets.token_hex(4)
    things = (f"thg_new{token}", f"thg_old{token}")  # one each: the same readings key would replace
    new = frames.encode({**FRAME_BATCH_V1, "thing_id": things[0], "request_id": "req_new"})
    old = written_with("frames.v1.avsc", {**FRAME_BATCH_V1, "thing_id": things[1], "request_id": "req_old"})
    producer = Producer({"bootstrap.servers": stack.settings.kafka_bootstrap})
    for thing, value in zip(things, (new, old)):
        producer.produce(stack.settings.topic_prefix + "frames", key=thing.encode(), value=value)
    assert producer.flush(30) == 0

    expected = [[thing, metric, ts, long, text, request]
                for thing, request in zip(things, ("req_new", "req_old"))
                for metric, ts, long, text in (("mdef_1", 1718884800000, 2**60, ""), ("mdef_2", 1718884801000, 0, "ok"))]
    assert eventually(lambda: len(found := rows(api, stack, things)) >= len(expected) and found) == expected
