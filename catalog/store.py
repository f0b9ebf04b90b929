"""What every catalog operation stands on: the view to check against, the writer to
write through, and the shared helpers for reading and paginating."""

from __future__ import annotations

import bisect
import re
import time

from catalog.errors import Invalid, not_found
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


# A cursor is a position in a list's order, written `<number>:<id>` (for the catalog's
# lists: creation time in ms and id). Any position is a valid cursor: the page starts
# after it, so an item deleted between two pages never breaks the paging.
CURSOR_PATTERN = r"^[0-9]{1,16}:[A-Za-z0-9_]{1,64}$"
_CURSOR = re.compile(CURSOR_PATTERN)


def cursor_at(number: int, item_id: str) -> str:
    return f"{number}:{item_id}"


def position(cursor: str) -> tuple[int, str]:
    """(number, id) of a cursor; 400 for a string that is not one."""
    if _CURSOR.match(cursor) is None:
        raise Invalid("cursor: <number>:<id>, as a page's nextCursor gives it",
                      field="cursor")
    number, item_id = cursor.split(":", 1)
    return int(number), item_id


def page(items: list[dict], limit: int, cursor: str | None) -> dict:
    """One page of `items` (in `ordered`'s order) after the position `cursor`."""
    if not 1 <= limit <= MAX_PAGE:
        raise Invalid(f"limit must be 1–{MAX_PAGE}", field="limit")
    start = bisect.bisect_right([_order(item) for item in items], position(cursor)) if cursor else 0
    chosen = items[start:start + limit]
    more = start + limit < len(items)
    return {"items": chosen, "nextCursor": cursor_at(*_order(chosen[-1])) if more and chosen else None}


def _order(body: dict) -> tuple[int, str]:
    return body.get("createdAt", 0), body["id"]


def ordered(bodies) -> list[dict]:
    return sorted(bodies, key=_order)
