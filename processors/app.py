"""The Faust application: one agent that turns raw requests into frames, verdicts
and dead letters.

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
from pathlib import Path

import faust

import schemas
from catalog.view import CatalogView
from config import Settings
from processors.normalize import Outcome, normalize, undecodable

log = logging.getLogger(__name__)


def create_app(settings: Settings, bootstrap: str, view: CatalogView) -> faust.App:
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
    )
    raw = app.topic(topics.raw, key_type=bytes, value_type=bytes)
    frames_out = app.topic(topics.frames, key_type=bytes, value_type=bytes)
    results_out = app.topic(topics.results, key_type=bytes, value_type=bytes)
    dead_out = app.topic(topics.deadletter, key_type=bytes, value_type=bytes)

    def thing_lookup(org_id: str, thing_id: str) -> dict | None:
        return view.get("thing", thing_id, org_id)

    @app.agent(raw, name="normalize")
    async def normalize_agent(stream):
        async for batch in stream.take(settings.processor_batch, within=0.05):
            pending = []
            for payload in batch:
                outcome = _process(payload, thing_lookup, view.resolution)
                request_key = outcome.request_id.encode()
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


def _process(payload: bytes, thing_lookup, table_lookup) -> Outcome:
    """Decode and normalize one raw message; an undecodable one becomes a dead letter."""
    try:
        envelope = schemas.decode(schemas.RAW_ENVELOPE, payload)
    except Exception as exc:  # foreign bytes on the raw topic must not stop the agent
        log.error("dead-lettering an undecodable raw message: %s", exc)
        return undecodable(payload, str(exc))
    return normalize(envelope, thing_lookup, table_lookup)


class ProcessorWorker(faust.Worker):
    """A Faust worker that touches a ready file once it is fully started."""

    def __init__(self, app: faust.App, ready_file: Path, **kwargs) -> None:
        super().__init__(app, **kwargs)
        self._ready_file = ready_file

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        self._ready_file.parent.mkdir(parents=True, exist_ok=True)
        self._ready_file.write_text(str(os.getpid()))
