"""Which rulebook judges a request: one pure normalizer per route (payload kind).

A rulebook takes the raw envelope, the catalog (read through `Catalog`'s two
methods, so tests pass a small stand-in) and the request's CPU budget
(processors.budget: only rulebooks whose cost is not linear in the body check it),
and returns the request's Outcome; it never raises for bad input. Adding a
dialect's payload kind is one entry here.
"""

from __future__ import annotations

import time
from typing import Callable, Protocol

from catalog.brief import brief
from catalog.resolution import ResolutionTable
from processors.assets import asset_batch, asset_data
from processors.budget import DEFAULT_CPU_SECONDS, Budget
from processors.integrations import map_integration
from processors.items import stream_items
from processors.datasource_records import judge_records
from processors.normalize import normalize
from processors.outcome import Outcome, Rejection, rejected
from processors.points import points
from processors.templates import map_template


class Catalog(Protocol):
    """What rulebooks read of the catalog (catalog.view.CatalogView has it)."""

    def get(self, kind: str, entity_id: str, org_id: str | None = None) -> dict | None: ...

    def resolution(self, type_version_id: str) -> ResolutionTable | None: ...


Rulebook = Callable[[dict, Catalog, Budget], Outcome]


def _frames(envelope: dict, catalog: Catalog, budget: Budget) -> Outcome:
    return normalize(envelope, lambda org, thing: catalog.get("thing", thing, org), catalog.resolution)


def _points(envelope: dict, catalog: Catalog, budget: Budget) -> Outcome:
    return points(envelope, lambda kind, entity_id, org: catalog.get(kind, entity_id, org))


RULEBOOKS: dict[str, Rulebook] = {
    "thing_data": _frames,  # seed 001: POST /v2/thing/{thingId}/data
    "stream_items": lambda envelope, catalog, budget: stream_items(envelope),  # seed 002: POST /api/ingest
    "harbor_points": _points,  # seed 003: POST /api/v1/ingest/ingest/{harbor_id}[/batch]
    "datasource_insert": lambda envelope, catalog, budget: judge_records(envelope, catalog.get),  # seed 004
    # seed 001, templates: POST /v2/thing/{thingId}/data/template/{templateId}[?previewOnly=true]
    "thing_template": lambda envelope, catalog, budget: map_template(envelope, catalog.get, catalog.resolution,
                                                                     budget=budget),
    "thing_template_preview": lambda envelope, catalog, budget: map_template(
        envelope, catalog.get, catalog.resolution, preview=True, budget=budget),
    # seed 000: POST /v1/assets/{id}/data and POST /v1/assets/data
    "asset_data": lambda envelope, catalog, budget: asset_data(envelope, catalog.get),
    "asset_batch": lambda envelope, catalog, budget: asset_batch(envelope, catalog.get),
    # seed 001, integrations: an MQTT message, a webhook's body, a polled page
    "integration": lambda envelope, catalog, budget: map_integration(envelope, catalog.get, catalog.resolution,
                                                                     budget),
}


def judge(envelope: dict, catalog: Catalog, cpu_seconds: float = DEFAULT_CPU_SECONDS) -> Outcome:
    """The outcome of one decoded request, by the rulebook of its route, within `cpu_seconds`."""
    budget = Budget(cpu_seconds)
    rulebook = RULEBOOKS.get(envelope["route"])
    if rulebook is None:  # from a newer edge, or an upstream producer's mistake
        return rejected(envelope, Rejection(400, "UNKNOWN_ROUTE", f"no rulebook for route {brief(envelope['route'])}",
                                            field="route"), 0, int(time.time() * 1000))
    return rulebook(envelope, catalog, budget)
