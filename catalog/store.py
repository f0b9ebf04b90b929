"""What every catalog operation stands on: the view to check against, the writer to
write through, and the shared helpers for reading and paginating."""

from __future__ import annotations

import time

from catalog.errors import SluiceError, not_found
from catalog.view import CatalogView
from catalog.writer import CatalogWriter

MAX_PAGE = 1000


def now_ms() -> int:
    return int(time.time() * 1000)


class Store:
    def __init__(self, view: CatalogView, writer: CatalogWriter) -> None:
        self.view = view
        self.writer = writer

    def _get(self, kind: str, entity_id: str, org_id: str, label: str | None = None) -> dict:
        body = self.view.get(kind, entity_id, org_id)
        if body is None:
            raise not_found(label or kind, entity_id)
        return body


def page(items: list[dict], limit: int, cursor: str | None) -> dict:
    """One page of `items` (already in a stable order) after the item whose id is `cursor`."""
    if not 1 <= limit <= MAX_PAGE:
        raise SluiceError(400, "INVALID_PAYLOAD", f"limit must be 1–{MAX_PAGE}", field="limit")
    start = 0
    if cursor:
        ids = [item["id"] for item in items]
        if cursor not in ids:
            raise SluiceError(400, "INVALID_PAYLOAD", "unknown cursor", field="cursor")
        start = ids.index(cursor) + 1
    chosen = items[start:start + limit]
    more = start + limit < len(items)
    return {"items": chosen, "nextCursor": chosen[-1]["id"] if more and chosen else None}


def ordered(bodies) -> list[dict]:
    return sorted(bodies, key=lambda b: (b.get("createdAt", 0), b["id"]))
