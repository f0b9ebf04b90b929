"""Metric name → id resolution tables, one per thing-type version.

Built once per type version from the catalog and reused for every reading, so
resolving a name is one dict lookup on its lower-cased form.
"""

from __future__ import annotations

from typing import NamedTuple


class ResolvedMetric(NamedTuple):
    metric_id: str
    name: str  # the name as defined (its canonical spelling)
    data_type: str
    enum_values: frozenset[str] | None


ResolutionTable = dict[str, ResolvedMetric]


def build_table(metric_ids: list[str], metrics: dict[str, dict]) -> ResolutionTable:
    """Map each lower-cased metric name of a type version to its metric.

    `metrics` is the catalog's metric bodies by id; ids missing from it are
    skipped (a type only references existing metrics; a deleted one resolves to nothing).
    """
    table: ResolutionTable = {}
    for metric_id in metric_ids:
        body = metrics.get(metric_id)
        if body is None:
            continue
        enum = body.get("enumValues")
        table[body["name"].lower()] = ResolvedMetric(
            metric_id, body["name"], body["dataType"], frozenset(enum) if enum else None
        )
    return table
