"""A lagging catalog view on the real broker (processors.handling, processors.catalog_wait):
the processor answers the requests it cannot judge yet with a retryable 503 and goes on
(once it raised and exited, and a supervisor's crash-loop limit followed); it judges them
the moment the view applies what they need; and the ingest topic waits for the view
instead of judging on a stale catalog."""

from __future__ import annotations

import asyncio
import time

import orjson
from confluent_kafka import Consumer, Producer

import schemas
from catalog.view import CatalogView
from processors.catalog_wait import CatalogWait
from processors.handling import BatchHandler
from processors.idempotency import IdempotencyStore
from processors.ingest_topic import IngestMessage
from processors.judge import Judge
from processors.outputs import OutputProducer
from schemas.topics import CATALOG, DEADLETTER, FRAMES, IDEMPOTENCY, RECORDS, RESULTS, MessageLimits
from sluice.topics_admin import ensure_topics
from tests.conftest import session_settings
from tests.test_datasource_records import SEED_ONE, envelope as datasource_envelope

WAIT_S = 0.5  # the handler's bound on a catalog wait (10 s in the processor)


def write_catalog(bootstrap: str, topic: str, entity_id: str) -> None:
    """One more catalog record: a data source of org_a."""
    body = {"id": entity_id, "name": entity_id, "externalId": "67890" if entity_id == "dsrc_1" else entity_id}
    record = {"kind": "datasource", "id": entity_id, "org_id": "org_a", "body": orjson.dumps(body).decode(),
              "updated_at": int(time.time() * 1000)}
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, key=f"datasource/{entity_id}".encode(),
                     value=schemas.encode(schemas.CATALOG_RECORD, record))
    assert producer.flush(10) == 0


def handler_on(view: CatalogView, settings, wait_s: float) -> BatchHandler:
    topics = schemas.Topics(settings.topic_prefix)
    limits = MessageLimits.for_body(settings.max_body_bytes)
    producer = OutputProducer(settings.kafka_bootstrap, limits.output)
    names = {logical: topics.name(logical) for logical in (FRAMES, RECORDS, RESULTS, DEADLETTER, IDEMPOTENCY, CATALOG)}
    return BatchHandler(Judge(IdempotencyStore(settings.kafka_bootstrap, topics.idempotency), limits), view,
                        producer, names, None, settings.max_body_bytes, wait=CatalogWait(view, wait_s))


def raw(request_id: str, catalog_offset: int) -> bytes:
    envelope = {**datasource_envelope(SEED_ONE, request_id), "catalog_offset": catalog_offset}
    return schemas.encode(schemas.RAW_ENVELOPE, envelope)


def verdicts(bootstrap: str, topic: str, count: int) -> dict[str, dict]:
    """The first `count` verdicts of the results topic, by request id."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-check", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    found: dict[str, dict] = {}
    deadline = time.monotonic() + 30
    try:
        while len(found) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                verdict = schemas.decode(schemas.VERDICT, message.value())
                found[verdict["request_id"]] = verdict
    finally:
        consumer.close()
    assert len(found) == count, found
    return found


def test_a_lagging_catalog_is_a_retryable_verdict_then_judged_once_the_view_applies_it(kafka_bootstrap, tmp_path):
    settings = session_settings(kafka_bootstrap, tmp_path)
    ensure_topics(kafka_bootstrap, settings)
    topics = schemas.Topics(settings.topic_prefix)
    write_catalog(kafka_bootstrap, topics.catalog, "dsrc_1")  # offset 0
    stuck = CatalogView(kafka_bootstrap, topics.catalog)
    stuck.start()
    assert stuck.wait_ready(30)
    stuck.stop()  # a view that stopped applying: it knows dsrc_1, not what comes next
    write_catalog(kafka_bootstrap, topics.catalog, "dsrc_2")  # offset 1
    handler = handler_on(stuck, settings, WAIT_S)
    try:
        # req_seen: its edge saw offset 1; req_new decides dsrc_1's schema, which needs the catalog's end.
        started = time.monotonic()
        asyncio.run(handler.raw([raw("req_seen", 1), raw("req_new", -1)]))
        assert time.monotonic() - started < 10 * WAIT_S  # bounded: each wait gave up after WAIT_S
        for verdict in verdicts(kafka_bootstrap, topics.results, 2).values():
            assert (verdict["http_status"], verdict["status"], verdict["errors"][0]["code"]) == (
                503, "failed", "UNAVAILABLE"), verdict
    finally:
        handler.producer.close()
        stuck.stop()  # again: asking where the catalog ends opened a reader

    view = CatalogView(kafka_bootstrap, topics.catalog)  # not started yet
    handler = handler_on(view, settings, 60)

    async def judged_once_applied() -> float:
        judging = asyncio.create_task(handler.raw([raw("req_again", 1)]))
        await asyncio.sleep(0.5)
        assert not judging.done()  # waiting for the view
        view.start()
        started = time.monotonic()
        await asyncio.wait_for(judging, 30)
        return time.monotonic() - started

    try:
        assert asyncio.run(judged_once_applied()) < 20  # woken by the view, not by the 60 s bound
        verdict = verdicts(kafka_bootstrap, topics.results, 3)["req_again"]
        assert (verdict["http_status"], verdict["catalog_changed"]) == (200, True), verdict
    finally:
        handler.producer.close()
        view.stop()


def test_the_ingest_topic_waits_for_a_lagging_view_and_goes_on_once_it_is_there(kafka_bootstrap, tmp_path):
    settings = session_settings(kafka_bootstrap, tmp_path)
    ensure_topics(kafka_bootstrap, settings)
    topics = schemas.Topics(settings.topic_prefix)
    write_catalog(kafka_bootstrap, topics.catalog, "dsrc_1")
    view = CatalogView(kafka_bootstrap, topics.catalog)  # not started yet: behind the catalog's end
    handler = handler_on(view, settings, WAIT_S)
    message = IngestMessage.of(0, 7, int(time.time() * 1000), b"thg_1", b'{"frames": []}',
                               [("sluice-api-key", b"sk_unknown")])

    async def scenario() -> None:
        judging = asyncio.create_task(handler.ingest([message]))
        await asyncio.sleep(4 * WAIT_S)
        assert not judging.done()  # waiting for the view, not judging on a stale catalog, not exiting
        view.start()
        await asyncio.wait_for(judging, 30)

    try:
        asyncio.run(scenario())
        verdict = verdicts(kafka_bootstrap, topics.results, 1)["kafka-0-7"]
        assert verdict["errors"][0]["code"] == "INVALID_API_KEY"  # judged on the caught-up catalog
    finally:
        handler.producer.close()
        view.stop()
