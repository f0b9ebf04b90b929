"""Waiting for the processor's catalog view, woken by the view itself.

The view's applier thread notifies a condition as it applies each record
(CatalogView.wait_applied, what the catalog API's writer waits on for read-your-writes),
so a wait ends the moment the record is in, and costs nothing when it already is: the
common case, checked without leaving the event loop. A wait that does happen runs in a
thread and is bounded; past the bound the caller is told the view is behind, and decides
(processors.judge answers such requests 503) instead of the process failing.
"""

from __future__ import annotations

import asyncio
import logging
import time

from bus import metrics
from catalog.view import CatalogView

log = logging.getLogger(__name__)

# How long a batch waits for the catalog view before its requests are told to retry.
CATALOG_WAIT_S = 10.0


class CatalogWait:
    def __init__(self, view: CatalogView, timeout: float = CATALOG_WAIT_S) -> None:
        self.view, self.timeout = view, timeout

    async def applied(self, offset: int) -> bool:
        """Whether the view has applied the record at `offset`, waiting up to the bound for it.
        Returns at once when it has; never raises."""
        if self.view.applied_offset >= offset:
            return True
        started = time.monotonic()
        try:
            return await self._wait(self.view.wait_applied, offset, self.timeout)
        finally:
            metrics.CATALOG_WAITS.observe(time.monotonic() - started)

    async def end(self) -> bool:
        """Whether the view has applied the catalog's end as of now (asked of the broker),
        waiting up to the bound; False also when the broker cannot say. Never raises."""
        return await self._wait(self.view.catch_up_to_end, self.timeout)

    async def _wait(self, wait, *args) -> bool:
        done = await asyncio.get_running_loop().run_in_executor(None, wait, *args)
        if not done:
            log.warning("the catalog view is behind (applied offset %d) after %.1f s",
                        self.view.applied_offset, self.timeout)
        return done
