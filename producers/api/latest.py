"""Read API: the latest event of a thing, from the warehouse."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from producers.edge.auth import Principal, principal, thing_for
from producers.openapi import errors
from warehouse.queries import latest_event

router = APIRouter(prefix="/v2", tags=["read"])


@router.get("/things/{thing_id}/latest-event", responses=errors(404, 503))
async def get_latest_event(thing_id: str, request: Request, who: Principal = Depends(principal)) -> dict:
    """The latest value of each metric by event time (a late backfill never replaces it)."""
    thing_for(request, who, thing_id, "read")
    view = request.app.state.catalog.view
    rows = await run_in_threadpool(latest_event, request.app.state.warehouse, who.org_id, thing_id)
    readings = []
    for row in rows:
        metric = view.get("metric", row["metric_id"]) or {}
        readings.append({
            "metric": metric.get("name", row["metric_id"]),
            "metricId": row["metric_id"],
            "value": row["value"],
            "timestamp": row["ts"],
            "dataType": row["data_type"],
            "unit": metric.get("unitLabel"),
        })
    readings.sort(key=lambda r: r["metric"].lower())
    return {
        "thingId": thing_id,
        "timestamp": max((r["timestamp"] for r in readings), default=None),
        "metrics": {r["metric"]: r["value"] for r in readings},
        "readings": readings,
    }
