"""The query parameters of every paginated list, with their real bounds."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from catalog.store import MAX_PAGE

PageLimit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"items per page, 1–{MAX_PAGE}")]
PageCursor = Annotated[str | None, Query(min_length=1, max_length=64,
                                         description="the last id of the previous page (its `nextCursor`)")]
