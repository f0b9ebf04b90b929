"""An integration's message as a raw envelope, the same shape the edge produces, and where
an integration lives among the integrations topic's partitions."""

from __future__ import annotations

import time
import zlib

from catalog.ids import request_id
from catalog.integrations import ROUTE


def raw_envelope(integration: dict, org_id: str, body: bytes, catalog_offset: int) -> dict:
    """The envelope of one message (`body`: catalog.integrations.message_body); the integration
    is its key id, so its ingest log, dead letters and replays name it."""
    return {
        "request_id": request_id(),
        "org_id": org_id,
        "key_id": integration["id"],
        "route": ROUTE,
        "received_at": int(time.time() * 1000),
        "thing_id": None,
        "stream": None,
        "template_id": None,
        "idempotency_key": None,
        "content_type": "application/json",
        # What this stage knew of the catalog: the processor catches up to it before judging.
        "catalog_offset": catalog_offset,
        "body": body,
    }


def partition_of(integration_id: str, partitions: int) -> int:
    """The integrations topic's partition that owns `integration_id`: its state is written there,
    and the instance assigned that partition runs it. Stable across processes and versions."""
    return zlib.crc32(integration_id.encode()) % partitions
