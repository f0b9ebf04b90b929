"""The query parameters of every paginated list, with their real bounds."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from catalog.store import CURSOR_PATTERN, MAX_PAGE

PageLimit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"items per page, 1–{MAX_PAGE}")]
PageCursor = Annotated[str | None, Query(
    pattern=CURSOR_PATTERN, max_length=81,
    description="where the previous page ended (its `nextCursor`, `<number>:<id>`); the page starts after that "
                "position, which need not name an item that still exists")]
