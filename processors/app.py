"""The Faust application: thin wiring around the judge.

Two agents take batches (processors.batching) and hand them to processors.handling, which
waits for the catalog, judges (processors.judge: the rulebooks, idempotency, fairness),
sends every output and waits for the broker's acks: `normalize` reads the raw topic (the
edge's envelopes), `ingest` the public ingest topic (outside producers' messages,
processors.ingest_topic).

Durability: processors.batching acks a batch whenever the loop moves on or is left, for
whatever reason (its `finally`), so nothing may leave the loop mid-batch: if producing
fails for good, or anything else escapes, the process exits at once, before Faust can
commit, and the batch is replayed on restart. A lagging catalog is no such failure: the
handler answers or waits (processors.handling).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from pathlib import Path

import faust

import schemas
from bus import metrics
from bus.schema_registry import SchemaRegistry
from catalog.view import CatalogView
from config import Settings
from processors import faust_consumer
from processors.batching import batches
from processors.handling import BatchHandler
from processors.idempotency import IdempotencyStore
from processors.ingest_topic import IngestMessage
from processors.judge import Judge
from processors.outputs import OutputProducer
from schemas import public
from schemas.topics import CATALOG, DEADLETTER, FRAMES, IDEMPOTENCY, RECORDS, RESULTS, MessageLimits

log = logging.getLogger(__name__)

# A batch goes once the stream's queue is empty; this is only its backstop (processors.batching).
BATCH_WITHIN_S = 0.01


def create_app(settings: Settings, bootstrap: str, view: CatalogView, seen: IdempotencyStore) -> faust.App:
    topics = schemas.Topics(settings.topic_prefix)
    limits = MessageLimits.for_body(settings.max_body_bytes)  # message sizes follow the edge's body limit
    app = _faust_app(settings, bootstrap, topics, limits)
    registry = SchemaRegistry(settings.schema_registry_url) if settings.schema_registry_url else None
    # Outputs go through librdkafka (processors.outputs), awaited before a batch is acked.
    producer = OutputProducer(bootstrap, limits.output)
    names = {logical: topics.name(logical) for logical in (FRAMES, RECORDS, RESULTS, DEADLETTER, IDEMPOTENCY, CATALOG)}
    handler = BatchHandler(Judge(seen, limits, settings.request_cpu_budget_s), view, producer, names, registry,
                           settings.max_body_bytes)

    @app.agent(app.topic(topics.raw, key_type=bytes, value_type=bytes), name="normalize")
    async def normalize_agent(stream):
        await _run(stream, settings.processor_batch, lambda events: handler.raw([event.value for event in events]),
                   metrics.RAW_MESSAGES)

    @app.agent(app.topic(topics.ingest, key_type=bytes, value_type=bytes), name="ingest")
    async def ingest_agent(stream):
        await _run(stream, settings.processor_batch,
                   lambda events: handler.ingest([_ingest_message(event.message) for event in events]),
                   metrics.INGEST_MESSAGES)

    if registry is not None:
        @app.task
        async def register_public_schema() -> None:
            # In the background: a registry that is down must not keep the raw topic waiting.
            subject = f"{topics.ingest}-value"
            schema_id = await registry.register(subject, public.frames_schema_text())
            log.info("registered %s as schema id %d", subject, schema_id)

    return app


def _faust_app(settings: Settings, bootstrap: str, topics: schemas.Topics, limits: MessageLimits) -> faust.App:
    app = faust.App(
        topics.processors_group,
        broker=f"kafka://{bootstrap}",
        value_serializer="raw",
        key_serializer="raw",
        producer_acks=-1,
        topic_partitions=settings.partitions,
        topic_allow_declare=False,  # topics are created by `sluice`, with their configs
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        datadir=str(settings.state_dir / "faust"),
        broker_commit_interval=1.0,
        # A restarted processor must not idle out the group's session timeout (Faust's default is 60 s):
        # static membership hands a restarted instance its partitions back at once; the short
        # timeout bounds the wait when a crashed member does not come back.
        consumer_group_instance_id=settings.instance_id or None,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
    )
    # Before the first topic: the app's consumer comes from its transport (processors.faust_consumer).
    app.transport = faust_consumer.Transport(app.conf.broker_consumer, app)
    app.conf.producer_max_request_size = limits.output
    app.conf.consumer_max_fetch_size = limits.raw
    return app


async def _run(stream, batch_size: int, handle, counter) -> None:
    """The agents' loop: each batch wholly handled before Faust may ack it, or the process exits;
    a request the handler set aside (processors.lanes) is acked once its task is done."""
    held: set[int] = set()
    async for events in batches(stream, batch_size, within=BATCH_WITHIN_S, held=held):
        try:
            started = time.monotonic()
            aside = await handle(events)
            for position, task in aside.items():
                event = events[position]
                held.add(id(event))
                task.add_done_callback(functools.partial(_ack_when_sent, stream, event))
            counter.inc(len(events))
            metrics.BATCH_SIZE.observe(len(events))
            metrics.BATCH_DURATION.observe(time.monotonic() - started)
        except asyncio.CancelledError:
            log.warning("stopped mid-batch; exiting before the batch is committed")
            os._exit(70)
        except BaseException:  # producing failed for good, most likely
            log.critical("a batch failed; exiting before it is committed", exc_info=True)
            os._exit(70)


def _ack_when_sent(stream, event, task: asyncio.Task) -> None:
    """Ack a set-aside request's message once its outputs are acknowledged, or exit before it is
    committed (a stop cancels the task: the message stays unacked and is judged again)."""
    if task.cancelled():
        return
    if task.exception() is not None:
        log.critical("a set-aside request failed; exiting before it is committed", exc_info=task.exception())
        os._exit(70)
    asyncio.ensure_future(stream.ack(event))


def _ingest_message(message) -> IngestMessage:
    """The parts of a Faust consumer message the ingest topic's contract reads."""
    timestamp_ms = int(round(message.timestamp * 1000)) if message.timestamp else int(time.time() * 1000)
    return IngestMessage.of(message.partition, message.offset, timestamp_ms, message.key, message.value,
                            message.headers)


class ProcessorWorker(faust.Worker):
    """A Faust worker that touches a ready file once it is fully started."""

    def __init__(self, app: faust.App, ready_file: Path, **kwargs) -> None:
        super().__init__(app, **kwargs)
        self._ready_file = ready_file

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        self._ready_file.parent.mkdir(parents=True, exist_ok=True)
        self._ready_file.write_text(str(os.getpid()))
