"""The Faust application: one agent that turns raw requests into frames, verdicts
and dead letters.

Idempotency: see processors.idempotency.

Durability: the agent takes raw messages in batches and awaits the broker's
acknowledgement of every output before the batch's offsets are acked, so a
crash replays the batch instead of losing it. If producing fails for good the
process exits at once, before Faust can commit the batch (`take()` acks in a
`finally`), and the batch is replayed on restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import faust

import schemas
from catalog.view import CatalogView
from config import Settings
from processors.idempotency import IdempotencyStore, idempotency_id, repeat_verdict
from processors.normalize import Outcome, normalize, undecodable

log = logging.getLogger(__name__)


def create_app(settings: Settings, bootstrap: str, view: CatalogView, seen: IdempotencyStore) -> faust.App:
    topics = schemas.Topics(settings.topic_prefix)
    app = faust.App(
        f"{settings.topic_prefix}processors",
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
    raw = app.topic(topics.raw, key_type=bytes, value_type=bytes)
    frames_out = app.topic(topics.frames, key_type=bytes, value_type=bytes)
    results_out = app.topic(topics.results, key_type=bytes, value_type=bytes)
    dead_out = app.topic(topics.deadletter, key_type=bytes, value_type=bytes)
    seen_out = app.topic(topics.idempotency, key_type=bytes, value_type=bytes)

    def thing_lookup(org_id: str, thing_id: str) -> dict | None:
        return view.get("thing", thing_id, org_id)

    @app.agent(raw, name="normalize")
    async def normalize_agent(stream):
        async for batch in stream.take(settings.processor_batch, within=0.01):
            decoded = [_decode(payload) for payload in batch]
            await _catch_up(view, max((e["catalog_offset"] for e in decoded if isinstance(e, dict)), default=-1))
            pending = []
            for payload, envelope in zip(batch, decoded):
                outcome, first_of = _process(payload, envelope, thing_lookup, view.resolution, seen)
                request_key = outcome.request_id.encode()
                if first_of is not None:
                    seen.remember(first_of, outcome.verdict)
                    pending.append(await seen_out.send(
                        key=first_of.encode(), value=schemas.encode(schemas.VERDICT, outcome.verdict)))
                if outcome.frames is not None:
                    pending.append(await frames_out.send(
                        key=outcome.frames["thing_id"].encode(),
                        value=schemas.encode(schemas.FRAME_BATCH, outcome.frames)))
                for dead in outcome.dead_letters:
                    pending.append(await dead_out.send(
                        key=request_key, value=schemas.encode(schemas.DEAD_LETTER, dead)))
                if outcome.verdict is not None:
                    pending.append(await results_out.send(
                        key=request_key, value=schemas.encode(schemas.VERDICT, outcome.verdict)))
            try:
                await asyncio.gather(*pending)
            except Exception:
                log.critical("producing outputs failed; exiting before the batch is committed", exc_info=True)
                os._exit(70)

    return app


CATALOG_CATCH_UP_S = 30.0


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
    deadline = time.monotonic() + CATALOG_CATCH_UP_S
    while view.applied_offset < offset:
        if time.monotonic() > deadline:
            log.warning("catalog view still behind offset %d; judging with what it has", offset)
            return
        await asyncio.sleep(0.005)


def _process(payload: bytes, envelope: dict | str, thing_lookup, table_lookup,
             seen: IdempotencyStore) -> tuple[Outcome, str | None]:
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
        if first is not None:
            return Outcome(None, repeat_verdict(first, envelope)), None
    return normalize(envelope, thing_lookup, table_lookup), key


class ProcessorWorker(faust.Worker):
    """A Faust worker that touches a ready file once it is fully started."""

    def __init__(self, app: faust.App, ready_file: Path, **kwargs) -> None:
        super().__init__(app, **kwargs)
        self._ready_file = ready_file

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        self._ready_file.parent.mkdir(parents=True, exist_ok=True)
        self._ready_file.write_text(str(os.getpid()))
