"""The catalog as a processor judges by: the view, plus the entities this processor
decided itself (a data source's inferred schema) until its view has applied them.

A rulebook may decide a catalog entity (Outcome.catalog). Another processor may
have decided it before (the previous owner of the raw partition, before a
rebalance), so such a decision is taken only on a view caught up to the catalog's
end: a request that decides one on a view not known to be there raises
StaleCatalog, and the processor catches up (CatalogView.catch_up_to_end) and
judges it again; if the view cannot get there in time the catalog is `lagging` for
the rest of the batch and such requests get a retryable verdict (processors.judge). Requests for one data source share a raw partition, so while
this processor judges a batch nobody else decides for them.

Decided entities that change (a schema) carry a `version`; the larger of the
view's and this processor's wins, so a write not yet applied by the view is
still seen. Entities without one (a harbor's ship, whose id is derived from
its name) are the same whoever writes them: the view's copy serves once it has one.
"""

from __future__ import annotations

from catalog.resolution import ResolutionTable
from catalog.view import CatalogView


class StaleCatalog(Exception):
    """A request decided a catalog entity on a view not known to be caught up."""


class DecidingCatalog:
    def __init__(self, view: CatalogView) -> None:
        self.view = view
        self.fresh = False  # the view was caught up to the catalog's end during this batch
        self.lagging = False  # the view could not be caught up to the catalog's end during this batch
        self._decided: dict[tuple[str, str], tuple[str, dict]] = {}  # (kind, id) -> (org, body)

    def get(self, kind: str, entity_id: str, org_id: str | None = None) -> dict | None:
        viewed = self.view.get(kind, entity_id, org_id)
        decided = self._decided.get((kind, entity_id))
        if decided is None:
            return viewed
        if viewed is not None and viewed.get("version", 0) >= decided[1].get("version", 0):
            self._decided.pop((kind, entity_id), None)  # the view has it now
            return viewed
        return decided[1] if org_id is None or decided[0] == org_id else viewed

    def sibling(self) -> DecidingCatalog:
        """A catalog with its own batch state that shares what this one decided (processors.lanes
        judges a set-aside request on one while the agent's batches go on with this one)."""
        other = DecidingCatalog(self.view)
        other._decided = self._decided
        return other

    @property
    def applied_offset(self) -> int:
        """Offset of the last catalog record the view applied."""
        return self.view.applied_offset

    def begin_batch(self) -> None:
        """A new batch: whether the view is at the catalog's end is not known yet."""
        self.fresh = self.lagging = False

    def resolution(self, type_version_id: str) -> ResolutionTable | None:
        return self.view.resolution(type_version_id)

    def require_fresh(self) -> None:
        """Raise StaleCatalog unless the view was caught up during this batch."""
        if not self.fresh:
            raise StaleCatalog()

    def remember(self, entities: list[dict]) -> None:
        """Entities this processor decided and is writing to the catalog."""
        for entity in entities:
            self._decided[(entity["kind"], entity["id"])] = (entity["org_id"], entity["body"])
