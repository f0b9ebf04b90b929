"""Record streams (seed 002): named destinations for items pushed with POST /api/ingest.

A stream's name is unique in its org and never changes: ingest keys name their
stream in `filters.streams`, and the warehouse's stream_items rows carry it.
Nothing else about a stream is checked when items arrive: items are schemaless.
"""

from __future__ import annotations

from catalog.errors import Conflict, not_found
from catalog.ids import PREFIXES, new_id
from catalog.models import StreamIn
from catalog.store import Store, now_ms, ordered


class Streams(Store):
    def create_stream(self, org_id: str, spec: StreamIn) -> dict:
        """A new stream; 409 CONFLICT when the org already has one of that name."""
        if self.view.stream_id_by_name(org_id, spec.name) is not None:
            raise Conflict(f"a stream named {spec.name!r} already exists", field="name")
        stream_id = new_id("stream")
        body = {"id": stream_id, **spec.model_dump(mode="json"), "createdAt": now_ms()}
        return self.writer.put("stream", stream_id, org_id, body)

    def stream(self, org_id: str, ref: str) -> dict:
        """The org's stream by id (`stm_…`) or by name; 404 otherwise (another org's too)."""
        body = self.stream_named(org_id, ref)
        if body is None and ref.startswith(PREFIXES["stream"]):
            body = self.view.get("stream", ref, org_id)
        if body is None:
            raise not_found("stream", ref)
        return body

    def stream_named(self, org_id: str, name: str) -> dict | None:
        stream_id = self.view.stream_id_by_name(org_id, name)
        return self.view.get("stream", stream_id, org_id) if stream_id else None

    def streams(self, org_id: str) -> list[dict]:
        return ordered(self.view.list("stream", org_id))
