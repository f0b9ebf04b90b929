"""The Faust application: agents that turn requests into frames, verdicts and dead letters.

`normalize` reads the raw topic (the edge's envelopes); `ingest` reads the public
ingest topic, where outside producers write with their own clients: each message
becomes the envelope an HTTP request would have (processors.ingest_topic), or its
rejection, and is judged by the same rulebooks on the same path.

Idempotency: see processors.idempotency.

Durability: the agent takes raw messages in batches and awaits the broker's
acknowledgement of every output before the batch's offsets are acked, so a
crash replays the batch instead of losing it. processors.batching acks a batch whenever
the loop moves on or is left, for whatever reason (its `finally`), so nothing
may leave the loop mid-batch: if producing fails for good, or anything else
escapes, the process exits at once, before Faust can commit, and the batch is
replayed on restart.

Catalog decisions: a rulebook may decide a catalog entity (a data source's
inferred schema, a harbor's ship or cargo seen first); it is written to the catalog topic with the request's other
outputs, and decided only on a view caught up to the catalog's end
(processors.deciding_catalog).

Isolation: a request the processor fails to handle (a bug, an output too large
for a message) becomes that request's own verdict and dead letter
(INTERNAL_ERROR, TOO_LARGE); its batch-mates are judged as usual.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import traceback
from pathlib import Path

import faust
import orjson

import schemas
from bus import metrics
from bus.schema_registry import SchemaRegistry, UnknownSchema
from catalog import access
from catalog.view import CatalogView
from config import Settings
from processors.deciding_catalog import DecidingCatalog, StaleCatalog
from processors import fetching, ingest_topic
from processors.batching import batches
from processors.budget import DEFAULT_CPU_SECONDS, OrgCosts
from processors.idempotency import IdempotencyStore, first_verdict, idempotency_id, repeat_verdict
from processors.ingest_topic import IngestMessage
from processors.outcome import Outcome, failed, undecodable
from processors.outputs import OutputProducer
from processors.rulebooks import Catalog, judge
from processors.splitting import encode_frame_batch, encode_record_batches
from schemas import public
from schemas.topics import CATALOG, DEADLETTER, FRAMES, IDEMPOTENCY, RECORDS, RESULTS, MessageLimits

log = logging.getLogger(__name__)


def create_app(settings: Settings, bootstrap: str, view: CatalogView, seen: IdempotencyStore) -> faust.App:
    topics = schemas.Topics(settings.topic_prefix)
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
    # Before the first topic: the app's consumer comes from its transport (processors.fetching).
    app.transport = fetching.Transport(app.conf.broker_consumer, app)
    # Message sizes follow the edge's body limit (schemas.topics.MessageLimits).
    limits = MessageLimits.for_body(settings.max_body_bytes)
    app.conf.producer_max_request_size = limits.output
    app.conf.consumer_max_fetch_size = limits.raw
    raw = app.topic(topics.raw, key_type=bytes, value_type=bytes)
    ingest = app.topic(topics.ingest, key_type=bytes, value_type=bytes)
    schema_registry = SchemaRegistry(settings.schema_registry_url) if settings.schema_registry_url else None
    # Outputs go through librdkafka (processors.outputs), sent and awaited as Faust topics are.
    producer = OutputProducer(bootstrap, limits.output)
    outputs = {logical: producer.topic(topics.name(logical))
               for logical in (FRAMES, RECORDS, RESULTS, DEADLETTER, IDEMPOTENCY, CATALOG)}
    # One per agent: `fresh` belongs to the batch an agent is judging.
    raw_catalog, ingest_catalog = DecidingCatalog(view), DecidingCatalog(view)
    costs = OrgCosts()  # a batch is judged cheapest org first (processors.budget)

    async def send_outputs(requests: list[tuple[bytes, dict | str]], catalog: DecidingCatalog) -> None:
        """Judge each (payload, envelope or why undecodable), produce every output, and wait
        for the broker to acknowledge them all."""
        pending = []
        catalog.fresh = False
        for payload, envelope in costs.order(requests, _org_of):
            started = time.thread_time()
            try:
                messages = request_messages(payload, envelope, catalog, seen, limits, settings.request_cpu_budget_s)
            except StaleCatalog:  # it decides a catalog entity: judge it again on the catalog's end
                await _catch_up_to_end(view)
                catalog.fresh = True
                messages = request_messages(payload, envelope, catalog, seen, limits, settings.request_cpu_budget_s)
            costs.spent(_org_of((payload, envelope)), time.thread_time() - started)
            if any(logical == CATALOG for logical, _, _ in messages):
                # Its verdict says the catalog changed: the records must be in the log first, so an
                # edge that catches up on seeing the verdict reads them (a first sighting: rare).
                for _, key, value in (m for m in messages if m[0] == CATALOG):
                    pending.append(await outputs[CATALOG].send(key=key, value=value))
                await producer.acked(pending)
                messages = [m for m in messages if m[0] != CATALOG]
            for logical, key, value in messages:
                pending.append(await outputs[logical].send(key=key, value=value))
        await producer.acked(pending)

    async def handle(batch: list[bytes]) -> None:
        decoded = [_decode(payload) for payload in batch]
        await _catch_up(view, max((e["catalog_offset"] for e in decoded if isinstance(e, dict)), default=-1))
        await send_outputs(list(zip(batch, decoded)), raw_catalog)

    async def handle_ingest(batch: list[IngestMessage]) -> None:
        # No edge told us which catalog it saw: judge on the catalog's end as of now, so a thing
        # created (or a key revoked) before the message was read is known.
        await _catch_up_to_end(view)
        schemas_ = await _writer_schemas(schema_registry, {ingest_topic.schema_id(m) for m in batch} - {None})
        requests: list[tuple[bytes, dict | str]] = []
        pending = []
        for message in batch:
            translated = ingest_topic.translate(message, authenticate, view.get, schemas_,
                                                settings.max_body_bytes)
            if isinstance(translated, Outcome):  # refused before it was a request: no rulebook to ask
                _count(translated)
                for logical, key, value in _messages(translated, None, limits):
                    pending.append(await outputs[logical].send(key=key, value=value))
            else:
                requests.append((translated["body"], translated))
        await send_outputs(requests, ingest_catalog)
        await producer.acked(pending)

    def authenticate(secret: str) -> tuple[str, dict] | None:
        return access.authenticate(view, secret)

    async def run_batches(batches, handle_one, counter) -> None:
        """The agents' loop: each batch wholly handled before Faust may ack it, or the process exits."""
        async for batch in batches:
            try:
                started = time.monotonic()
                await handle_one(batch)
                counter.inc(len(batch))
                metrics.BATCH_SIZE.observe(len(batch))
                metrics.BATCH_DURATION.observe(time.monotonic() - started)
            except asyncio.CancelledError:
                log.warning("stopped mid-batch; exiting before the batch is committed")
                os._exit(70)
            except BaseException:  # producing failed for good, most likely
                log.critical("a batch failed; exiting before it is committed", exc_info=True)
                os._exit(70)

    @app.agent(raw, name="normalize")
    async def normalize_agent(stream):
        await run_batches(raw_batches(stream), handle, metrics.RAW_MESSAGES)

    async def raw_batches(stream):
        async for events in batches(stream, settings.processor_batch, within=0.01):
            yield [event.value for event in events]

    async def ingest_batches(stream):
        async for events in batches(stream, settings.processor_batch, within=0.01):
            yield [_ingest_message(event.message) for event in events]

    @app.agent(ingest, name="ingest")
    async def ingest_agent(stream):
        await run_batches(ingest_batches(stream), handle_ingest, metrics.INGEST_MESSAGES)

    if schema_registry is not None:
        @app.task
        async def register_public_schema() -> None:
            # In the background: a registry that is down must not keep the raw topic waiting.
            subject = f"{topics.ingest}-value"
            schema_id = await schema_registry.register(subject, public.frames_schema_text())
            log.info("registered %s as schema id %d", subject, schema_id)

    return app


# Kafka's framing of one record in a batch, on top of key and value (generous).
RECORD_OVERHEAD = 1024


def _org_of(request: tuple[bytes, dict | str]) -> str | None:
    envelope = request[1]
    return envelope.get("org_id") if isinstance(envelope, dict) else None


def request_messages(payload: bytes, envelope: dict | str, catalog: Catalog, seen: IdempotencyStore,
                     limits: MessageLimits,
                     cpu_seconds: float = DEFAULT_CPU_SECONDS) -> list[tuple[str, bytes, bytes]]:
    """Every message one raw message produces, as (logical topic, key, value).

    Never raises for a request: an exception while judging or encoding it becomes
    its INTERNAL_ERROR verdict and dead letter, and an output that would not fit
    a message (frames are split, so only a pathological one) its TOO_LARGE.
    """
    try:
        outcome, first_of = _process(payload, envelope, catalog, seen, cpu_seconds)
        if outcome.catalog and isinstance(catalog, DecidingCatalog):
            catalog.require_fresh()
        # What an Idempotency-Key remembers: the verdict with the request's fingerprint.
        first = (first_of, first_verdict(outcome.verdict, envelope)) if first_of is not None else None
        messages = _messages(outcome, first, limits)
    except StaleCatalog:
        raise
    except Exception as exc:
        if not isinstance(envelope, dict):
            raise  # an undecodable message has no request to blame; the batch exits uncommitted
        trace = "".join(traceback.format_exception(exc, limit=-6))[-4000:]
        log.error("request %s failed in the processor; dead-lettered as INTERNAL_ERROR:\n%s",
                  envelope["request_id"], trace)
        outcome = failed(envelope, "INTERNAL_ERROR", f"the processor failed: {type(exc).__name__}: {exc}")
        _count(outcome)
        return _messages(outcome, None, limits)
    largest = max(len(key) + len(value) for _, key, value in messages)
    if largest + RECORD_OVERHEAD > limits.output and isinstance(envelope, dict):
        # Its dead letter carries only the body, which fits (see MessageLimits).
        log.error("request %s: an output of %d bytes exceeds the %d-byte message limit",
                  envelope["request_id"], largest, limits.output)
        outcome = failed(envelope, "TOO_LARGE", f"an output of {largest} bytes exceeds the "
                         f"{limits.output}-byte message limit", 413)
        _count(outcome)
        return _messages(outcome, None, limits)
    _count(outcome)
    if first is not None:
        seen.remember(*first)
    if outcome.catalog and isinstance(catalog, DecidingCatalog):
        catalog.remember(outcome.catalog)
    return messages


def _messages(outcome: Outcome, first: tuple[str, dict] | None,
              limits: MessageLimits) -> list[tuple[str, bytes, bytes]]:
    """An outcome's encoded messages: first verdict of an idempotency key, frames and
    dialect table rows (split under the budget), dead letters, then the verdict."""
    messages = []
    request_key = outcome.request_id.encode()
    if first is not None:
        messages.append((IDEMPOTENCY, first[0].encode(), schemas.encode(schemas.VERDICT, first[1])))
    for entity in outcome.catalog:
        record = {"kind": entity["kind"], "id": entity["id"], "org_id": entity["org_id"],
                  "body": orjson.dumps(entity["body"]).decode(), "updated_at": int(time.time() * 1000)}
        messages.append((CATALOG, f"{entity['kind']}/{entity['id']}".encode(),
                         schemas.encode(schemas.CATALOG_RECORD, record)))
    for frame_batch in outcome.frames or ():  # or (): a rulebook with no readings may say None
        thing_key = frame_batch["thing_id"].encode()
        messages.extend((FRAMES, thing_key, value)
                        for value in encode_frame_batch(frame_batch, limits.frames_budget))
    if outcome.records:
        verdict = outcome.verdict
        for batch in outcome.records:
            messages.extend((RECORDS, request_key, value) for value in encode_record_batches(
                verdict["request_id"], verdict["org_id"], verdict["received_at"], batch["table"], batch["rows"],
                limits.frames_budget))
    for dead in outcome.dead_letters:
        messages.append((DEADLETTER, request_key, schemas.encode(schemas.DEAD_LETTER, dead)))
    if outcome.verdict is not None:
        verdict = {**outcome.verdict, "catalog_changed": True} if outcome.catalog else outcome.verdict
        messages.append((RESULTS, request_key, schemas.encode(schemas.VERDICT, verdict)))
    return messages


def _count(outcome: Outcome) -> None:
    """An outcome in the metrics: its verdict (status, first error code), items ingested, dead letters."""
    verdict = outcome.verdict
    if verdict is not None:
        errors = verdict.get("errors") or ()
        metrics.VERDICTS.labels(verdict["status"], errors[0]["code"] if errors else "").inc()
        metrics.ITEMS.inc(verdict.get("frames_ingested") or 0)
    for dead in outcome.dead_letters:
        metrics.DEAD_LETTERS.labels(dead.get("reason") or "UNKNOWN").inc()


CATALOG_CATCH_UP_S = 30.0


async def _catch_up_to_end(view: CatalogView) -> None:
    """Wait (in a thread) until the view has applied the catalog's end as of now."""
    if not await asyncio.get_running_loop().run_in_executor(None, view.catch_up_to_end, CATALOG_CATCH_UP_S):
        raise RuntimeError("the catalog view did not reach the catalog's end") from None


async def _writer_schemas(registry: SchemaRegistry | None, ids: set[int]) -> ingest_topic.WriterSchemas:
    """The writer schema of each id, or why there is none. Waits while the registry is
    unreachable (retrying), so nothing of the batch is acked meanwhile."""
    found: ingest_topic.WriterSchemas = {}
    for schema_id in ids:
        if registry is None:
            found[schema_id] = ingest_topic.UnknownSchemaId(
                "an Avro value, but no schema registry is configured (SLUICE_SCHEMA_REGISTRY_URL)")
            continue
        try:
            found[schema_id] = await registry.writer_schema(schema_id)
        except UnknownSchema as exc:
            found[schema_id] = ingest_topic.UnknownSchemaId(str(exc))
    return found


def _ingest_message(message) -> IngestMessage:
    """The parts of a Faust consumer message the ingest topic's contract reads."""
    timestamp_ms = int(round(message.timestamp * 1000)) if message.timestamp else int(time.time() * 1000)
    return IngestMessage.of(message.partition, message.offset, timestamp_ms, message.key, message.value,
                            message.headers)


def _decode(payload: bytes) -> dict | str:
    """The envelope, or why it could not be decoded (foreign bytes must not stop the agent)."""
    try:
        return schemas.decode(schemas.RAW_ENVELOPE, payload)
    except Exception as exc:
        return str(exc) or type(exc).__name__


async def _catch_up(view: CatalogView, offset: int) -> None:
    """Wait until the view has applied the catalog as the accepting edge saw it.

    Without this, a thing created a moment ago could be unknown here although
    the edge already accepted data for it.
    """
    if view.applied_offset >= offset:
        return
    started = time.monotonic()
    deadline = started + CATALOG_CATCH_UP_S
    try:
        while view.applied_offset < offset:
            if time.monotonic() > deadline:
                log.warning("catalog view still behind offset %d; judging with what it has", offset)
                return
            await asyncio.sleep(0.005)
    finally:
        metrics.CATALOG_WAITS.observe(time.monotonic() - started)


def _process(payload: bytes, envelope: dict | str, catalog: Catalog, seen: IdempotencyStore,
             cpu_seconds: float = DEFAULT_CPU_SECONDS) -> tuple[Outcome, str | None]:
    """Normalize one decoded raw message: (outcome, idempotency id to record it under).

    A repeat of an Idempotency-Key seen within the window gets the first verdict
    and is not reprocessed; an undecodable message becomes a dead letter.
    """
    if isinstance(envelope, str):
        log.error("dead-lettering an undecodable raw message: %s", envelope)
        return undecodable(payload, envelope), None
    key = idempotency_id(envelope)
    if key is not None:
        first = seen.first(key, envelope["received_at"])
        # The same request again (replayed after a crash, its first verdict already out): judge it
        # again, since its other outputs may not all have landed; they overwrite downstream.
        if first is not None and first["request_id"] != envelope["request_id"]:
            return Outcome(None, repeat_verdict(first, envelope)), None
    return judge(envelope, catalog, cpu_seconds), key


class ProcessorWorker(faust.Worker):
    """A Faust worker that touches a ready file once it is fully started."""

    def __init__(self, app: faust.App, ready_file: Path, **kwargs) -> None:
        super().__init__(app, **kwargs)
        self._ready_file = ready_file

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        self._ready_file.parent.mkdir(parents=True, exist_ok=True)
        self._ready_file.write_text(str(os.getpid()))
