"""A Confluent-compatible schema registry, as the processor needs it: writer schemas by id
(cached forever: a registered id never changes its schema) and registering a subject's schema.

Small on purpose: two HTTP calls of the Confluent API, over httpx. A registry that
does not answer is nobody's message's fault, so lookups retry with backoff until it
answers, and report on the process's health (bus.health) meanwhile: a component
named for the registry is failing while it is unreachable, and gone once it answers
again (a component must beat while it exists, and an idle processor makes no lookups).
"""

from __future__ import annotations

import asyncio
import logging

import httpx

from bus.health import Component, health

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0  # well inside a health component's stall_after: each retry beats


class UnknownSchema(Exception):
    """The registry answered that it has no schema with this id (404), or not an Avro one."""


class RegistryUnavailable(Exception):
    """The registry did not answer usefully (connection refused, timeout, 5xx): retry later."""


class SchemaRegistry:
    """Lookups and registration against one registry's Confluent API base URL
    (for example http://127.0.0.1:8081/apis/ccompat/v7)."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.AsyncClient(base_url=self.url, timeout=timeout,
                                         headers={"Accept": CONTENT_TYPE})
        self._schemas: dict[int, str] = {}
        self._failing: dict[str, Component] = {}

    async def writer_schema(self, schema_id: int) -> str:
        """The schema text registered under `schema_id`. Cached forever once found.

        Blocks (asynchronously) while the registry is unreachable, retrying with
        backoff; raises UnknownSchema when it answers 404 or the schema is not Avro.
        """
        found = self._schemas.get(schema_id)
        if found is None:
            found = await self._retrying("schema-registry lookup", self._fetch, schema_id)
            self._schemas[schema_id] = found
        return found

    async def register(self, subject: str, schema: str) -> int:
        """Register `schema` (Avro) under `subject`; the id it has. Idempotent: the same schema
        gets the id it already has. Blocks, retrying, until the registry answers."""
        return await self._retrying("schema-registry registration", self._register, subject, schema)

    async def close(self) -> None:
        await self._client.aclose()
        for component in self._failing.values():
            component.stopped()
        self._failing.clear()

    async def _fetch(self, schema_id: int) -> str:
        reply = await self._client.get(f"/schemas/ids/{schema_id}")
        if reply.status_code == 404:
            raise UnknownSchema(f"the schema registry has no schema with id {schema_id}")
        self._check(reply)
        body = reply.json()
        kind = body.get("schemaType") or "AVRO"
        if kind != "AVRO":
            raise UnknownSchema(f"schema id {schema_id} is a {kind} schema, not Avro")
        return body["schema"]

    async def _register(self, subject: str, schema: str) -> int:
        reply = await self._client.post(f"/subjects/{subject}/versions", json={"schema": schema},
                                        headers={"Content-Type": CONTENT_TYPE})
        self._check(reply)
        return int(reply.json()["id"])

    @staticmethod
    def _check(reply: httpx.Response) -> None:
        # 404 is handled by the caller; anything else but success is the registry's or our
        # configuration's trouble (auth, a 5xx), never the message's: retry, and say so.
        if reply.status_code >= 300:
            raise RegistryUnavailable(f"HTTP {reply.status_code}: {reply.text[:200]}")

    async def _retrying(self, name: str, call, *args):
        backoff = FIRST_BACKOFF_S
        while True:
            try:
                result = await call(*args)
            except (httpx.TransportError, RegistryUnavailable, ValueError) as exc:
                reason = f"{self.url}: {type(exc).__name__}: {exc}"
                component = self._failing.get(name)
                if component is None:
                    log.warning("%s failing, retrying: %s", name, reason)
                    component = self._failing[name] = health().component(name, stall_after=MAX_BACKOFF_S * 6)
                component.failing(reason)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            except BaseException:
                self._answered(name)
                raise
            self._answered(name)
            return result

    def _answered(self, name: str) -> None:
        component = self._failing.pop(name, None)
        if component is not None:
            log.warning("%s: the registry answers again", name)
            component.stopped()
