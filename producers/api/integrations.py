"""Integrations (seed 001, "Ingesting via integrations"): the catalog routes that create,
change, pause and map an integration, and the route a webhook integration receives on.

Integrations are org-wide: only keys of the org without filters create or change them;
every key of the org reads them, never their secrets (catalog.integrations). Another
org's integration is 404.

`POST /v2/integrations/{id}/webhook` takes no API key: the integration's secret signs
the raw body (producers.edge.webhook_signature), as it is once a `Content-Encoding` (gzip,
zstd) is undone; its body limit is the ingest routes' (LARGE_BODY_PATHS). A good signature lands the body on the raw
topic as the integration's message, and the answer is 202 once it is durable; a bad,
stale or replayed one is 401 and lands nothing. The signature is the message's
Idempotency-Key, so a replay is never processed twice, whichever edge takes it
(producers.edge.webhook_replays). The processors map the message through
the integration's template and resource mapping (processors/integrations.py).
"""

from __future__ import annotations

import re
import time
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from catalog.integrations import (KIND, ROUTE, STATUS_KIND, THINGS_MAX, ExternalId, IntegrationIn, IntegrationPatch,
                                  message_body, public)
from catalog.models import EntityId, _Body
from catalog.service import Catalog
from catalog.store import page
from producers.api.paging import PageCursor, PageLimit
from producers.edge.auth import Principal, org_wide, principal, signed
from producers.edge.errors import ApiError, not_found
from producers.edge.submit import Target, check_rate, json_document, submit
from producers.edge.webhook_signature import HEADER, BadSignature, replay_key, verify
from producers.openapi import errors
from warehouse.errors import WarehouseError
from warehouse.queries import key_totals

router = APIRouter(prefix="/v2", tags=["integrations"])

# Request headers a webhook message carries for its resource expression (`headers."x-device"`), less these.
UNSHOWN_HEADERS = frozenset({HEADER.lower(), "authorization", "cookie", "x-api-key", "content-length", "host"})
MAX_HEADERS = 50
# Beside a body of the ingest limit, the shown headers must fit the raw topic's envelope allowance.
MAX_HEADERS_BYTES = 16 * 1024
# Bodies of readings (the webhook's) or of many mappings at once take the ingest routes' body limit
# (producers.edge.limits), not the API's 64 KiB: at most THINGS_MAX mappings of up to ~230 bytes each.
LARGE_BODY_PATHS = (re.compile(r"/v2/integrations/[^/]+/webhook"), re.compile(r"/v2/integrations/[^/]+/things"))


class ThingMapping(_Body):
    thingId: EntityId = Field(description="the org's thing this external id's readings land on")


ThingMap = Annotated[dict[ExternalId, EntityId], Body(max_length=THINGS_MAX,
                                                     examples=[{"dev-17": "thg_0123456789abcdef0123"}])]
ThingMapChanges = Annotated[dict[ExternalId, EntityId | None], Body(max_length=THINGS_MAX, media_type=
                            "application/merge-patch+json", examples=[{"dev-17": "thg_0123456789abcdef0123",
                                                                       "dev-9": None}])]


def _catalog(request: Request) -> Catalog:
    return request.app.state.catalog


@router.post("/integrations", status_code=201, responses=errors(400, 404))
def create_integration(spec: IntegrationIn, request: Request,
                       who: Principal = Depends(org_wide("integrations"))) -> dict:
    """A webhook integration's answer carries its signing `secret`: this answer only."""
    return _catalog(request).create_integration(who.org_id, spec)


@router.get("/integrations", responses=errors(400))
def list_integrations(request: Request, who: Principal = Depends(principal), limit: PageLimit = 100,
                      cursor: PageCursor = None) -> dict:
    who.require("read")
    return page(_catalog(request).integrations(who.org_id), limit, cursor)


@router.get("/integrations/{integration_id}", responses=errors(404))
def get_integration(integration_id: str, request: Request, who: Principal = Depends(principal)) -> dict:
    who.require("read")
    return public(_catalog(request).integration(who.org_id, integration_id))


@router.patch("/integrations/{integration_id}", responses=errors(400, 404))
def update_integration(integration_id: str, patch: IntegrationPatch, request: Request,
                       who: Principal = Depends(org_wide("integrations"))) -> dict:
    return _catalog(request).update_integration(who.org_id, integration_id, patch)


@router.delete("/integrations/{integration_id}", status_code=204, responses=errors(404))
def delete_integration(integration_id: str, request: Request,
                       who: Principal = Depends(org_wide("integrations"))) -> Response:
    _catalog(request).delete_integration(who.org_id, integration_id)
    return Response(status_code=204)


@router.post("/integrations/{integration_id}/pause", responses=errors(404))
def pause_integration(integration_id: str, request: Request,
                      who: Principal = Depends(org_wide("integrations"))) -> dict:
    """Stop receiving (a webhook answers 409) and pulling; the MQTT broker keeps what arrives meanwhile."""
    return _catalog(request).set_paused(who.org_id, integration_id, True)


@router.post("/integrations/{integration_id}/resume", responses=errors(404))
def resume_integration(integration_id: str, request: Request,
                       who: Principal = Depends(org_wide("integrations"))) -> dict:
    return _catalog(request).set_paused(who.org_id, integration_id, False)


@router.get("/integrations/{integration_id}/status", responses=errors(404))
async def integration_status(integration_id: str, request: Request, who: Principal = Depends(principal)) -> dict:
    """State (paused; a webhook's receiving; else as the integrations stage last reported it), last
    success, last error and counters, as the stage instance running it reported them; what the
    pipeline wrote of its messages and how far behind it is, from the ingest log."""
    who.require("read")
    catalog = _catalog(request)
    integration = catalog.integration(who.org_id, integration_id)
    reported = catalog.view.get(STATUS_KIND, integration_id, who.org_id) or {}
    # A webhook is received by the edge itself: nothing to connect, so it is receiving unless paused.
    waiting = "receiving" if integration["kind"] == "webhook" else "pending"
    state = "paused" if integration["paused"] else reported.get("state", waiting)
    return {"id": integration_id, "kind": integration["kind"], "state": state,
            **{k: v for k, v in reported.items() if k not in ("id", "state")},
            **await _written(request, who.org_id, integration_id, reported.get("lastSuccessAt"))}


async def _written(request: Request, org_id: str, integration_id: str, last_durable_at: int | None) -> dict:
    """`messagesProcessed`, `readingsOut`, `metricValuesOut` and `lagSeconds` (the newest message made
    durable, less the newest the ingest log holds; None without the stage's report, as for a webhook),
    or all None while the warehouse does not answer."""
    try:
        totals = await run_in_threadpool(key_totals, request.app.state.warehouse, org_id, integration_id)
    except WarehouseError:
        return {"messagesProcessed": None, "readingsOut": None, "metricValuesOut": None, "lagSeconds": None}
    lag, newest = None, totals["newest_received_at"]
    if last_durable_at is not None:
        # Nothing processed yet: the newest durable message has waited this long at least.
        lag = max(0, last_durable_at - newest if newest is not None else int(time.time() * 1000) - last_durable_at)
        lag /= 1000
    return {"messagesProcessed": totals["requests"], "readingsOut": totals["readings"],
            "metricValuesOut": totals["metric_values"], "lagSeconds": lag}


@router.put("/integrations/{integration_id}/things", responses=errors(400, 404))
def replace_things(integration_id: str, things: ThingMap, request: Request,
                   who: Principal = Depends(org_wide("integrations"))) -> dict:
    """The whole mapping at once: exactly these external ids map, to these things (all checked first:
    one unknown thing and nothing changes)."""
    return {"things": _catalog(request).map_things(who.org_id, integration_id, things, replace=True)}


@router.patch("/integrations/{integration_id}/things", responses=errors(400, 404))
def change_things(integration_id: str, changes: ThingMapChanges, request: Request,
                  who: Principal = Depends(org_wide("integrations"))) -> dict:
    """Many mappings at once, as a JSON merge patch (RFC 7396): an external id with a thing id maps
    to it, one with null is unmapped, the others stay (all checked first)."""
    return {"things": _catalog(request).map_things(who.org_id, integration_id, changes, replace=False)}


@router.put("/integrations/{integration_id}/things/{external_id}", responses=errors(400, 404))
def map_thing(integration_id: str, external_id: str, mapping: ThingMapping, request: Request,
              who: Principal = Depends(org_wide("integrations"))) -> dict:
    """Readings of `external_id` land on the thing from now on (and on replay of its dead letters)."""
    return _catalog(request).map_thing(who.org_id, integration_id, external_id, mapping.thingId)


@router.delete("/integrations/{integration_id}/things/{external_id}", status_code=204, responses=errors(404))
def unmap_thing(integration_id: str, external_id: str, request: Request,
                who: Principal = Depends(org_wide("integrations"))) -> Response:
    _catalog(request).unmap_thing(who.org_id, integration_id, external_id)
    return Response(status_code=204)


# ----- the webhook


async def _signed_webhook(request: Request) -> Principal:
    """The webhook integration the path names, acting as the caller, once its signature over the
    raw body checks out; 404 for no webhook integration, 401 for a bad, stale or replayed signature."""
    integration_id = request.path_params["integration_id"]
    integration = request.app.state.catalog.view.get(KIND, integration_id)
    if integration is None or integration.get("kind") != "webhook":
        raise not_found("integration", integration_id)
    body = await request.body()
    tolerance = integration["config"].get("toleranceSeconds") or request.app.state.settings.webhook_tolerance_s
    now = time.time()
    try:
        timestamp, v1 = verify(request.headers.get(HEADER), integration["secrets"]["secret"], body, now, tolerance)
    except BadSignature as exc:
        raise ApiError(401, "UNAUTHORIZED", str(exc), reason=exc.reason) from None
    if not request.app.state.webhook_signatures.first_time(integration_id, v1, timestamp, now, tolerance):
        raise ApiError(401, "UNAUTHORIZED", f"{HEADER}: this signature was already accepted (a replay)",
                          reason="replayed")
    request.state.signature = timestamp, v1
    org_id = request.app.state.catalog.view.org_of(KIND, integration_id)
    return Principal(org_id, {"id": integration_id, "name": integration["name"], "scopes": ["write"], "filters": {}})


def shown_headers(headers: dict[str, str]) -> dict[str, str]:
    """The request headers a webhook's message carries: no secrets, the first MAX_HEADERS of
    the rest while they fit MAX_HEADERS_BYTES."""
    shown, size = {}, 0
    for name, value in headers.items():
        if name in UNSHOWN_HEADERS:
            continue
        size += len(name) + len(value)
        if len(shown) == MAX_HEADERS or size > MAX_HEADERS_BYTES:
            break
        shown[name] = value
    return shown


@router.post("/integrations/{integration_id}/webhook", status_code=202, responses={
    202: {"description": "durable on Kafka; mapped to readings by the processors"},
    **errors(400, 401, 404, 409, 503)})
async def receive_webhook(integration_id: str, request: Request,
                          who: Principal = Depends(signed(_signed_webhook))) -> JSONResponse:
    integration = request.app.state.catalog.view.get(KIND, integration_id, who.org_id)
    if integration is None:  # deleted while its request was read
        raise not_found("integration", integration_id)
    try:
        if integration["paused"]:
            raise ApiError(409, "INTEGRATION_PAUSED", f"integration {integration_id!r} is paused; resume it "
                              "(POST /v2/integrations/{id}/resume) and send again")
        check_rate(request, who)
        body = await request.body()
        json_document(body)
        message = message_body(None, shown_headers(dict(request.headers)), body, payload_is_json=True)
        timestamp, v1 = request.state.signature
        done = await submit(request, who, Target(ROUTE, partition=integration_id), message, None,
                            idempotency=replay_key(timestamp, v1))
    except ApiError:
        # Not accepted: the sender may send the same signed request again.
        request.app.state.webhook_signatures.forget(integration_id, request.state.signature[1])
        raise
    return JSONResponse({"requestId": done.request_id, "integrationId": integration_id, "status": "accepted"},
                        status_code=202, headers={"X-Request-Id": done.request_id})
