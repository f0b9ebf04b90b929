"""What the processor's agents do with one batch: wait for the catalog, judge, send every
output and wait for the broker to acknowledge them all. Knows nothing of Faust: the agents
(processors.app) hand it plain batches and ack them only once it returns.

`raw` takes the edge's envelopes. It first waits (processors.catalog_wait) until the view
has applied the catalog the batch's edges saw; requests it has not applied within the
bound are answered 503 (processors.judge), so a lagging catalog never stops the processor.

`ingest` takes the public ingest topic's messages: each becomes the envelope an HTTP
request would have (processors.ingest_topic), or its rejection. No edge told us which
catalog it saw, so the batch is judged on the catalog's end as of now, a thing created (or
a key revoked) before the message was read being known; while the view cannot get there,
the batch waits (its partitions make no progress, nothing is lost, no verdict is wrong).

Catalog decisions (a data source's inferred schema, a harbor's ship seen first) are written
to the catalog topic and acknowledged before the request's verdict is sent: an edge that
catches up on seeing the verdict reads them.
"""

from __future__ import annotations

import asyncio
import logging

from bus import metrics
from bus.schema_registry import SchemaRegistry, UnknownSchema
from catalog import access
from catalog.view import CatalogView
from processors import ingest_topic
from processors.catalog_wait import CatalogWait
from processors.deciding_catalog import DecidingCatalog
from processors.ingest_topic import IngestMessage
from processors.judge import Judge, Message, Request, count, decode, encode, org_of
from processors.lanes import Lane
from processors.outcome import Outcome
from processors.outputs import OutputProducer
from schemas.topics import CATALOG

log = logging.getLogger(__name__)

Aside = dict[int, asyncio.Task]  # a batch's requests set aside (processors.lanes): position -> its task


class BatchHandler:
    """One per processor; its two agents each judge on their own DecidingCatalog (the
    `fresh` and `lagging` of the batch under way)."""

    def __init__(self, judge: Judge, view: CatalogView, producer: OutputProducer, topic_names: dict[str, str],
                 schema_registry: SchemaRegistry | None, max_body_bytes: int,
                 wait: CatalogWait | None = None, lane: Lane | None = None) -> None:
        self.judge, self.view, self.producer, self.names = judge, view, producer, topic_names
        self.schema_registry, self.max_body_bytes = schema_registry, max_body_bytes
        self.wait = wait or CatalogWait(view)
        self.lane = lane or Lane(judge.costs)
        self.raw_catalog, self.ingest_catalog = DecidingCatalog(view), DecidingCatalog(view)

    async def raw(self, batch: list[bytes]) -> Aside:
        """Judge a batch of raw envelopes and wait until every output is acknowledged, except
        those of requests set aside (processors.lanes): {position in the batch: its task}; the
        caller acks those messages once their tasks are done. Raises only if producing failed
        for good (the caller must not ack the batch)."""
        requests = [(payload, decode(payload)) for payload in batch]
        self.raw_catalog.begin_batch()
        await self.wait.applied(max((e["catalog_offset"] for _, e in requests if isinstance(e, dict)), default=-1))
        pending: list = []
        aside = await self._judge(requests, self.raw_catalog, pending, list(range(len(batch))))
        await self.producer.acked(pending)
        return aside

    async def ingest(self, batch: list[IngestMessage]) -> Aside:
        """Translate and judge a batch of ingest-topic messages and wait until every output is
        acknowledged, but as `raw`; waits first, for as long as it takes, for the catalog's end.
        Raises as `raw`."""
        catalog = self.ingest_catalog
        catalog.begin_batch()
        while not await self.wait.end():
            log.warning("the ingest topic waits for the catalog view to reach the catalog's end")
            await asyncio.sleep(1.0)  # the broker may have answered at once that it cannot say
        catalog.fresh = True
        schemas_ = await self._writer_schemas({ingest_topic.schema_id(m) for m in batch} - {None})
        requests: list[Request] = []
        positions: list[int] = []
        pending: list = []
        for position, message in enumerate(batch):
            translated = ingest_topic.translate(message, self._authenticate, self.view.get, schemas_,
                                                self.max_body_bytes)
            if isinstance(translated, Outcome):  # refused before it was a request: no rulebook to ask
                count(translated)
                await self._send(encode(translated, None, self.judge.limits), pending)
            else:
                requests.append((translated["body"], translated))
                positions.append(position)
        aside = await self._judge(requests, catalog, pending, positions)
        await self.producer.acked(pending)
        return aside

    async def _judge(self, requests: list[Request], catalog: DecidingCatalog, pending: list,
                     positions: list[int]) -> Aside:
        # Each request's messages are queued as soon as it is judged: librdkafka sends them while the
        # next is judged.
        position_of = {id(request): position for request, position in zip(requests, positions)}
        aside: Aside = {}
        for request in self.judge.order(requests):
            org = org_of(request)
            if self.lane.takes(org):
                await self.lane.room()
                metrics.SET_ASIDE.inc()
                aside[position_of[id(request)]] = self.lane.run(
                    self._judged(request, catalog.sibling(), self._judge_in_lane), self._sent, org)
                continue
            messages = await self._judged(request, catalog, self._judge_here)
            await self._send(messages, pending)
        return aside

    async def _judged(self, request: Request, catalog: DecidingCatalog, judge_one) -> list[Message]:
        """`request`'s messages, judged by `judge_one` (here or in the lane)."""
        messages = await judge_one(request, catalog)
        if messages is None:  # it decides a catalog entity: judge it again on the catalog's end
            if await self.wait.end():
                catalog.fresh = True
            else:
                catalog.lagging = True
            messages = await judge_one(request, catalog)
        return messages

    async def _judge_here(self, request: Request, catalog: DecidingCatalog) -> list[Message] | None:
        return self.judge.one(request, catalog)

    async def _judge_in_lane(self, request: Request, catalog: DecidingCatalog) -> list[Message] | None:
        return await asyncio.get_running_loop().run_in_executor(self.lane.executor, self.judge.one, request, catalog)

    async def _sent(self, messages: list[Message]) -> None:
        pending: list = []
        await self._send(messages, pending)
        await self.producer.acked(pending)

    async def _send(self, messages: list[Message], pending: list) -> None:
        """Queue `messages`, adding their acks to `pending`; decided catalog entities first, acked
        before anything else of the request is sent."""
        if any(logical == CATALOG for logical, _, _ in messages):
            for _, key, value in (m for m in messages if m[0] == CATALOG):
                pending.append(await self.producer.send(self.names[CATALOG], key, value))
            await self.producer.acked(pending)
            messages = [m for m in messages if m[0] != CATALOG]
        for logical, key, value in messages:
            pending.append(await self.producer.send(self.names[logical], key, value))

    def _authenticate(self, secret: str) -> tuple[str, dict] | None:
        return access.authenticate(self.view, secret)

    async def _writer_schemas(self, ids: set[int]) -> ingest_topic.WriterSchemas:
        """The writer schema of each id, or why there is none. Waits while the registry is
        unreachable (retrying), so nothing of the batch is acked meanwhile."""
        found: ingest_topic.WriterSchemas = {}
        for schema_id in ids:
            if self.schema_registry is None:
                found[schema_id] = ingest_topic.UnknownSchemaId(
                    "an Avro value, but no schema registry is configured (SLUICE_SCHEMA_REGISTRY_URL)")
                continue
            try:
                found[schema_id] = await self.schema_registry.writer_schema(schema_id)
            except UnknownSchema as exc:
                found[schema_id] = ingest_topic.UnknownSchemaId(str(exc))
        return found
