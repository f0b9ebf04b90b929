"""The ingestion dialects the edge speaks: one module per API a client may already use.

A dialect is its routes, its paths (which take the ingest body limit), and the
shape its errors answer in; everything after the route (auth, rate, envelope,
raw topic, verdicts) is shared, in producers.edge.submit. Registering a dialect here
is all the rest of the edge needs to know of it.
"""

from __future__ import annotations

import functools

from producers.dialects import assets  # seed 000: POST /v1/assets/{assetId}/data
from producers.dialects import datasource  # seed 004: POST /restapi/datasource/insert
from producers.dialects import frames  # seed 001: POST /v2/thing/{thingId}/data
from producers.dialects import harbor  # seed 003: POST /api/v1/ingest/ingest/{harbor_id}[/batch]
from producers.dialects import streams  # seed 002: POST /api/ingest
from producers.dialects import templates  # seed 001: POST /v2/thing/{thingId}/data/template/{templateId}
from producers.dialects.dialect import Dialect
from producers.edge.errors import ApiError


@functools.cache
def registered() -> tuple[Dialect, ...]:
    """Every dialect; adding one is one line here and its import above."""
    return (frames.DIALECT, streams.DIALECT, harbor.DIALECT, datasource.DIALECT, templates.DIALECT,
            assets.DIALECT)


def dialect_for(path: str) -> Dialect | None:
    """The dialect serving `path`, or None for the control plane (catalog, keys, admin)."""
    for dialect in registered():
        if dialect.paths.match(path):
            return dialect
    return None


def error_body(path: str, error: ApiError) -> dict:
    """`error` in the shape the client of `path` expects."""
    dialect = dialect_for(path)
    return dialect.error_body(error) if dialect else error.body()
