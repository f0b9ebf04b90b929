"""Who may write what: every write operation of the OpenAPI document, tried by a key of
each filter kind (places, things, streams) holding every scope, against real objects.

Org-wide catalog objects (definitions, presets, places, harbors, streams, data sources,
templates) are written only by keys without filters: a filtered key gets 403 and the
object stays as it was. Writes inside a place or to a thing succeed only when the key's
filters reach it. An operation the table does not classify fails the walk, so a new
route is covered the day it is added.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends

from producers.edge.auth import Principal, org_wide, principal, undeclared_writes

SYNC = {"Prefer": "wait=10"}
FILTER_KINDS = ("places", "things", "streams")
WRITES = ("post", "put", "patch", "delete")

# What a route writes, as the table classifies it.
ORG = "org-wide"  # 403 for every filtered key, the object unchanged
PLACE = "inside a place"  # only a key naming the place
THING = "a thing"  # only a key reaching the thing (naming it or its place)
KEYS = "api keys"  # any admin key, for keys no broader than itself
PLATFORM = "platform"  # the platform-admin key only
# Ingest routes write data, not catalog objects: each dialect checks the key's filters
# against its target (thing, harbor, stream, data source) before anything is produced.
# They are walked for refusals outside the filters only.
INGEST = "data"
SIGNED = "signed"  # an integration's webhook: no key reaches it, only its secret's signature (401)


def token() -> str:
    return secrets.token_hex(3)


@dataclass
class World:
    """A fresh org with one object of each kind; `*_in` lie inside the filtered keys' filters."""

    admin: httpx.Client
    admin_key_id: str
    ids: dict[str, str]
    keys: dict[str, dict] = field(default_factory=dict)  # filter kind → key body (with the secret)
    victims: dict[str, str] = field(default_factory=dict)  # filter kind → a thing in reach, to delete

    def fresh_thing(self, kind: str) -> str:
        """A thing inside `kind`'s filters that may be deleted."""
        if kind == "things":
            return self.victims[kind]
        return made(self.admin.post(f"/v2/sites/{self.ids['site_in']}/things", json={"thingName": token()}))["id"]

    def inner_filters(self, kind: str) -> dict:
        """Filters within `kind`'s key's own: one object it names."""
        return {"places": {"placeIds": [self.ids["site_in"]]}, "things": {"thingIds": [self.ids["thing_in"]]},
                "streams": {"streams": [self.ids["stream_in"]]}}[kind]

    def narrower_key(self, kind: str) -> str:
        """The id of a key no broader than `kind`'s key, made by the org's admin."""
        return made(self.admin.post("/v2/api-keys", json={
            "name": "narrower", "scopes": ["read"], "filters": self.inner_filters(kind)}))["id"]


def made(reply: httpx.Response, status: int = 201) -> dict:
    assert reply.status_code == status, reply.text
    return reply.json()


@pytest.fixture(scope="module")
def world(stack) -> World:
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": stack.settings.admin_key}, timeout=30) as root:
        org = made(root.post("/v2/orgs", json={"name": f"authz {token()}"}))
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": org["adminKey"]["key"]}, timeout=30) as admin:
        metric = made(admin.post("/v2/definitions/metrics", json={
            "name": "probeTemp", "dataType": "Double", "defaultAggregation": "Last"}))["id"]
        thing_type = made(admin.post("/v2/definitions/thing-types", json={"displayName": "Probe",
                                                                           "metricIds": [metric]}))
        ids = {"metric": metric, "type": thing_type["id"]}
        for place in ("site", "fleet"):
            for side in ("in", "out"):
                ids[f"{place}_{side}"] = made(admin.post(f"/v2/{place}s", json={"name": f"{place} {side}"}))["id"]
        for side in ("in", "out"):
            ids[f"harbor_{side}"] = made(admin.post("/v2/harbors", json={"name": side, "autoProvision": True}))["id"]
            ids[f"thing_{side}"] = made(admin.post(f"/v2/sites/{ids[f'site_{side}']}/things", json={
                "thingName": side, "thingTypeId": thing_type["id"]}))["id"]
            ids[f"stream_{side}"] = made(admin.post("/v2/streams", json={"name": f"stream-{side}-{token()}"}))["name"]
            ids[f"source_{side}"] = made(admin.post("/v2/datasources", json={
                "name": side, "externalId": f"source-{side}-{token()}"}))["externalId"]
        ids["template"] = made(admin.post("/v2/templates", json={
            "name": "probe", "target": "ThingData", "records": "samples",
            "timestamp": {"path": "t", "format": "epochMillis"}, "metrics": {"probeTemp": "temp"}}))["id"]
        ids["integration"] = made(admin.post("/v2/integrations", json={**INTEGRATION, "templateId": ids["template"]}))[
            "id"]
        # Named by the streams key's filters before they exist: creating them is still org-wide.
        ids["reserved_stream"], ids["reserved_source"] = f"reserved-{token()}", f"reserved-{token()}"
        world = World(admin, org["adminKey"]["id"], ids)
        world.victims["things"] = made(admin.post(f"/v2/sites/{ids['site_out']}/things", json={"thingName": "v"}))["id"]
        filters = {
            "places": {"placeIds": [ids["site_in"], ids["fleet_in"], ids["harbor_in"]]},
            "things": {"thingIds": [ids["thing_in"], world.victims["things"]]},
            "streams": {"streams": [ids["stream_in"], ids["source_in"], ids["reserved_stream"],
                                    ids["reserved_source"]]},
        }
        for kind, named in filters.items():
            world.keys[kind] = made(admin.post("/v2/api-keys", json={"name": kind, "scopes": ["admin"],
                                                                     "filters": named}))
        yield world


# ----- the table: every write operation, what it writes, and how to try it

Attempt = Callable[[World, str, bool], tuple[str, Any, dict]]  # (world, filter kind, inside) → (path, body, headers)


@dataclass(frozen=True)
class Case:
    writes: str
    attempt: Attempt
    witness: Callable[[World], str] | None = None  # a GET (by the org's admin) that must not change when refused
    reaches: tuple[str, ...] = ()  # the filter kinds whose key may do it inside its filters
    success: int = 200


def plain(path: str, body: Any = None, headers: dict | None = None) -> Attempt:
    """The same request inside or out: `path` and `body` formatted with the world's ids."""
    return lambda w, kind, inside: (path.format(**w.ids), fill(body, w), headers or {})


def fill(body: Any, w: World) -> Any:
    if isinstance(body, str):
        return body.format(**w.ids, token=token())
    if isinstance(body, dict):
        return {k: fill(v, w) for k, v in body.items()}
    if isinstance(body, list):
        return [fill(v, w) for v in body]
    return body


def sided(path: str, target: str, body: Any = None) -> Attempt:
    """`path` with `{}` the world's inside or outside `target` (site, fleet, harbor, thing)."""
    return lambda w, kind, inside: (path.format(w.ids[f"{target}_{'in' if inside else 'out'}"]), fill(body, w), {})


def witness(path: str) -> Callable[[World], str]:
    return lambda w: path.format(**w.ids)


METRIC = {"name": "probe{token}", "dataType": "Double", "defaultAggregation": "Last"}
TEMPLATE = {"name": "probe", "target": "ThingData", "records": "rows", "timestamp": {"path": "t", "format": "epochMillis"},
            "metrics": {"probeTemp": "x"}}
FRAMES = {"frames": [{"timestamp": 1718884800000, "metrics": {"probeTemp": 1.5}}]}
POINT = {"time": "2024-06-20T12:00:00Z", "ship_id": "Truck1", "cargo_id": "temperature", "value": 21.5}
INTEGRATION = {"name": "vendor", "kind": "webhook", "templateId": "{template}",
               "resource": {"from": "record", "expression": "device"}}
ASSET = {"machineInsights": [{"time": "2024-06-20T12:00:00Z", "name": "CumulativeOperatingHours", "value": 1.5}]}


def delete_thing(w: World, kind: str, inside: bool) -> tuple[str, Any, dict]:
    return f"/v2/things/{w.fresh_thing(kind) if inside else w.ids['thing_out']}", None, {}


def create_key(w: World, kind: str, inside: bool) -> tuple[str, Any, dict]:
    # Inside: a key within the caller's filters; outside: one without filters (broader).
    filters = w.inner_filters(kind) if inside else {}
    return "/v2/api-keys", {"name": "minted", "scopes": ["read"], "filters": filters}, {}


def revoke_key(w: World, kind: str, inside: bool) -> tuple[str, Any, dict]:
    return f"/v2/api-keys/{w.narrower_key(kind) if inside else w.admin_key_id}", None, {}


def stream_push(w: World, kind: str, inside: bool) -> tuple[str, Any, dict]:
    return "/api/ingest", {"region": "North"}, {"X-Stream": w.ids["stream_out"]}


TABLE: dict[str, Case] = {
    "POST /v2/definitions/metrics": Case(ORG, plain("/v2/definitions/metrics", METRIC),
                                         witness("/v2/definitions/metrics?limit=1000")),
    "PATCH /v2/definitions/metrics/{metric_id}": Case(ORG, plain("/v2/definitions/metrics/{metric}", {
        "displayName": "renamed"}), witness("/v2/definitions/metrics/{metric}")),
    "POST /v2/definitions/thing-types": Case(ORG, plain("/v2/definitions/thing-types", {
        "displayName": "T", "metricIds": ["{metric}"]}), witness("/v2/definitions/thing-types?limit=1000")),
    "POST /v2/definitions/thing-types/{type_id}/versions": Case(ORG, plain(
        "/v2/definitions/thing-types/{type}/versions", {"metricIds": []}), witness("/v2/definitions/thing-types/{type}")),
    "POST /v2/definitions/presets/{preset}": Case(ORG, plain("/v2/definitions/presets/iso15143-3"),
                                                  witness("/v2/definitions/metrics?limit=1000")),
    "POST /v2/sites": Case(ORG, plain("/v2/sites", {"name": "new"}), witness("/v2/sites?limit=1000")),
    "POST /v2/fleets": Case(ORG, plain("/v2/fleets", {"name": "new"}), witness("/v2/fleets?limit=1000")),
    "POST /v2/harbors": Case(ORG, plain("/v2/harbors", {"name": "new"}), witness("/v2/harbors?limit=1000")),
    # Even the harbor a place filter names: the harbor's settings are the org's.
    "PATCH /v2/harbors/{harbor_id}": Case(ORG, plain("/v2/harbors/{harbor_in}", {"autoProvision": False}),
                                          witness("/v2/harbors/{harbor_in}")),
    "POST /v2/streams": Case(ORG, plain("/v2/streams", {"name": "{reserved_stream}"}), witness("/v2/streams?limit=1000")),
    "POST /v2/datasources": Case(ORG, plain("/v2/datasources", {"name": "new", "externalId": "{reserved_source}"}),
                                 witness("/v2/datasources?limit=1000")),
    "POST /v2/templates": Case(ORG, plain("/v2/templates", TEMPLATE), witness("/v2/templates?limit=1000")),
    "PUT /v2/templates/{template_id}": Case(ORG, plain("/v2/templates/{template}", TEMPLATE),
                                            witness("/v2/templates/{template}")),
    "DELETE /v2/templates/{template_id}": Case(ORG, plain("/v2/templates/{template}"),
                                               witness("/v2/templates/{template}")),
    "POST /v2/integrations": Case(ORG, plain("/v2/integrations", INTEGRATION), witness("/v2/integrations?limit=1000")),
    "PATCH /v2/integrations/{integration_id}": Case(ORG, plain("/v2/integrations/{integration}", {"name": "renamed"}),
                                                    witness("/v2/integrations/{integration}")),
    "DELETE /v2/integrations/{integration_id}": Case(ORG, plain("/v2/integrations/{integration}"),
                                                     witness("/v2/integrations/{integration}")),
    "POST /v2/integrations/{integration_id}/pause": Case(ORG, plain("/v2/integrations/{integration}/pause"),
                                                         witness("/v2/integrations/{integration}")),
    "POST /v2/integrations/{integration_id}/resume": Case(ORG, plain("/v2/integrations/{integration}/resume"),
                                                          witness("/v2/integrations/{integration}")),
    "PUT /v2/integrations/{integration_id}/things": Case(ORG, plain(
        "/v2/integrations/{integration}/things", {"dev-1": "{thing_in}"}), witness("/v2/integrations/{integration}")),
    "PATCH /v2/integrations/{integration_id}/things": Case(ORG, plain(
        "/v2/integrations/{integration}/things", {"dev-1": "{thing_in}"}), witness("/v2/integrations/{integration}")),
    "PUT /v2/integrations/{integration_id}/things/{external_id}": Case(ORG, plain(
        "/v2/integrations/{integration}/things/dev-1", {"thingId": "{thing_in}"}),
        witness("/v2/integrations/{integration}")),
    "DELETE /v2/integrations/{integration_id}/things/{external_id}": Case(ORG, plain(
        "/v2/integrations/{integration}/things/dev-1"), witness("/v2/integrations/{integration}")),
    "POST /v2/integrations/{integration_id}/webhook": Case(SIGNED, plain("/v2/integrations/{integration}/webhook",
                                                                         {"samples": []})),
    "POST /v2/sites/{place_id}/things": Case(PLACE, sided("/v2/sites/{}/things", "site", {"thingName": "n"}),
                                             witness("/v2/sites/{site_out}/things?limit=1000"), ("places",), 201),
    "POST /v2/sites/{place_id}/things/bulk": Case(PLACE, sided("/v2/sites/{}/things/bulk", "site", [
        {"thingName": "n"}]), witness("/v2/sites/{site_out}/things?limit=1000"), ("places",), 207),
    "POST /v2/fleets/{place_id}/things": Case(PLACE, sided("/v2/fleets/{}/things", "fleet", {
        "thingName": "n"}), witness("/v2/fleets/{fleet_out}/things?limit=1000"), ("places",), 201),
    "POST /v2/fleets/{place_id}/things/bulk": Case(PLACE, sided("/v2/fleets/{}/things/bulk", "fleet", [
        {"thingName": "n"}]), witness("/v2/fleets/{fleet_out}/things?limit=1000"), ("places",), 207),
    "POST /v2/harbors/{harbor_id}/ships": Case(PLACE, sided("/v2/harbors/{}/ships", "harbor", {
        "shipId": "ship{token}"}), witness("/v2/harbors/{harbor_out}/ships?limit=1000"), ("places",), 201),
    "POST /v2/harbors/{harbor_id}/cargos": Case(PLACE, sided("/v2/harbors/{}/cargos", "harbor", {
        "cargoId": "cargo{token}"}), witness("/v2/harbors/{harbor_out}/cargos?limit=1000"), ("places",), 201),
    "PATCH /v2/things/{thing_id}": Case(THING, sided("/v2/things/{}", "thing", {"model": "patched"}),
                                        witness("/v2/things/{thing_out}"), ("places", "things")),
    "DELETE /v2/things/{thing_id}": Case(THING, delete_thing, witness("/v2/things/{thing_out}"), ("places", "things"),
                                         204),
    "POST /v2/api-keys": Case(KEYS, create_key, witness("/v2/api-keys"), FILTER_KINDS, 201),
    "DELETE /v2/api-keys/{key_id}": Case(KEYS, revoke_key, witness("/v2/api-keys"), FILTER_KINDS, 204),
    "POST /v2/orgs": Case(PLATFORM, plain("/v2/orgs", {"name": "mine"})),
    "POST /v2/admin/sql": Case(PLATFORM, plain("/v2/admin/sql", {"sql": "SELECT 1"})),
    # Org-scoped SQL reads the org's tables whole: a filtered key is refused, naming its filters.
    "POST /v2/sql": Case(ORG, plain("/v2/sql", {"sql": "SELECT count() FROM readings"})),
    "POST /v2/thing/{thing_id}/data": Case(INGEST, plain("/v2/thing/{thing_out}/data", FRAMES)),
    "POST /v2/thing/{thing_id}/data/template/{template_id}": Case(INGEST, plain(
        "/v2/thing/{thing_out}/data/template/{template}", {"rows": [{"t": 1718884800000, "x": 1}]})),
    "POST /api/ingest": Case(INGEST, stream_push),
    "POST /api/v1/ingest/ingest/{harbor_id}": Case(INGEST, plain("/api/v1/ingest/ingest/{harbor_out}", POINT)),
    "POST /api/v1/ingest/ingest/{harbor_id}/batch": Case(INGEST, plain("/api/v1/ingest/ingest/{harbor_out}/batch",
                                                                       [POINT])),
    "POST /restapi/datasource/insert": Case(INGEST, plain("/restapi/datasource/insert", {
        "datasource_id": "{source_out}", "data": [{"value": 1}]})),
    "POST /v1/assets/{asset_id}/data": Case(INGEST, plain("/v1/assets/{thing_out}/data", ASSET)),
    "POST /v1/assets/data": Case(INGEST, plain("/v1/assets/data", {"assets": [{"assetId": "{thing_out}", **ASSET}]})),
}


def refusal_problem(reply: httpx.Response, case: Case, kind: str) -> str | None:
    """What is wrong with a refusal, or None. Ingest dialects refuse in their own shapes, and
    those that hide what a key cannot see (streams, assets) answer 404 as their seeds do."""
    if case.writes == SIGNED:
        return None if reply.status_code == 401 else f"expected 401, got {reply.status_code} {reply.text}"
    if case.writes == INGEST:
        return None if reply.status_code in (403, 404) else f"expected 403/404, got {reply.status_code} {reply.text}"
    if reply.status_code != 403 or reply.json()["error"]["code"] != "FORBIDDEN":
        return f"expected 403 FORBIDDEN, got {reply.status_code} {reply.text}"
    if case.writes == ORG and not any(name in reply.json()["error"]["message"] for name in keys_filters(kind)):
        return f"the reason names no filter: {reply.text}"
    return None


def keys_filters(kind: str) -> tuple[str, ...]:
    return {"places": ("placeIds",), "things": ("thingIds",), "streams": ("streams",)}[kind]


@pytest.mark.parametrize("kind", FILTER_KINDS)
def test_every_write_operation_keeps_a_filtered_key_inside_its_filters(stack, world, kind):
    document = world.admin.get("/openapi.json").json()
    operations = [f"{method.upper()} {path}" for path, methods in document["paths"].items()
                  for method in methods if method in WRITES]
    problems = [f"unclassified route: {op} (add it to TABLE with what it writes)" for op in operations
                if op not in TABLE]
    problems += [f"TABLE names an operation the document does not have: {op}" for op in TABLE
                 if op not in operations]
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": world.keys[kind]["key"]}, timeout=30) as key:
        for op in operations:
            case = TABLE.get(op)
            if case is None:
                continue
            method = op.split(" ", 1)[0]
            before = world.admin.get(case.witness(world)).json() if case.witness else None
            path, body, headers = case.attempt(world, kind, False)
            reply = key.request(method, path, json=body, headers=headers)
            if problem := refusal_problem(reply, case, kind):
                problems.append(f"{op} as a {kind} key, outside its filters: {problem}")
            if case.witness and world.admin.get(case.witness(world)).json() != before:
                problems.append(f"{op} as a {kind} key: refused, yet {case.witness(world)} changed")
            if case.writes not in (PLACE, THING, KEYS):
                continue
            path, body, headers = case.attempt(world, kind, True)
            reply = key.request(method, path, json=body, headers=headers)
            if kind in case.reaches and reply.status_code != case.success:
                problems.append(f"{op} as a {kind} key, inside its filters: expected {case.success}, "
                                f"got {reply.status_code} {reply.text}")
            if kind not in case.reaches and (problem := refusal_problem(reply, case, kind)):
                problems.append(f"{op} as a {kind} key, which cannot name {path}: {problem}")
    assert not problems, "\n".join(problems)


# ----- the hostile probe's cases


def test_a_thing_limited_key_adds_no_type_version_and_the_admins_ingest_still_works(stack, world):
    ids = world.ids
    secret = made(world.admin.post("/v2/api-keys", json={"name": "one thing", "scopes": ["write"],
                                                         "filters": {"thingIds": [ids["thing_in"]]}}))["key"]
    thing_type = world.admin.get(f"/v2/definitions/thing-types/{ids['type']}").json()
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": secret}, timeout=30) as limited:
        reply = limited.post(f"/v2/definitions/thing-types/{ids['type']}/versions", json={"metricIds": []})
    assert reply.status_code == 403, reply.text
    assert "thingIds" in reply.json()["error"]["message"]
    assert world.admin.get(f"/v2/definitions/thing-types/{ids['type']}").json() == thing_type
    fresh = made(world.admin.post(f"/v2/sites/{ids['site_in']}/things", json={"thingName": "new",
                                                                              "thingTypeId": ids["type"]}))
    assert fresh["thingTypeVersionId"] == thing_type["latestVersionId"]
    reply = world.admin.post(f"/v2/thing/{fresh['id']}/data", json=FRAMES, headers=SYNC)
    assert reply.status_code == 200 and reply.json()["metrics"] == ["probeTemp"], reply.text


def test_a_site_limited_key_neither_rewrites_nor_deletes_a_template_nor_renames_a_metric(stack, world):
    ids = world.ids
    secret = made(world.admin.post("/v2/api-keys", json={"name": "one site", "scopes": ["write"],
                                                         "filters": {"placeIds": [ids["site_in"]]}}))["key"]
    template = world.admin.get(f"/v2/templates/{ids['template']}").json()
    metric = world.admin.get(f"/v2/definitions/metrics/{ids['metric']}").json()
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": secret}, timeout=30) as limited:
        for reply in (limited.put(f"/v2/templates/{ids['template']}", json=TEMPLATE),
                      limited.delete(f"/v2/templates/{ids['template']}"),
                      limited.patch(f"/v2/definitions/metrics/{ids['metric']}", json={"displayName": "renamed"})):
            assert reply.status_code == 403, reply.text
            assert reply.json()["error"]["code"] == "FORBIDDEN" and "placeIds" in reply.json()["error"]["message"]
    assert world.admin.get(f"/v2/templates/{ids['template']}").json() == template
    assert world.admin.get(f"/v2/definitions/metrics/{ids['metric']}").json() == metric


def test_a_filtered_key_reads_the_definitions_it_ingests_against_and_only_the_objects_it_names(stack, world):
    ids = world.ids
    version = world.admin.get(f"/v2/definitions/thing-types/{ids['type']}").json()["latestVersionId"]
    readable = ["/v2/definitions/metrics", f"/v2/definitions/metrics/{ids['metric']}",
                f"/v2/definitions/thing-types/{ids['type']}", f"/v2/definitions/thing-types/{ids['type']}/versions/"
                f"{version}", "/v2/templates", f"/v2/templates/{ids['template']}"]
    hidden = {"places": [f"/v2/sites/{ids['site_out']}", f"/v2/harbors/{ids['harbor_out']}",
                         f"/v2/things/{ids['thing_out']}"],
              "things": [f"/v2/sites/{ids['site_in']}", f"/v2/things/{ids['thing_out']}"],
              "streams": [f"/v2/streams/{ids['stream_out']}", f"/v2/datasources/{ids['source_out']}",
                          f"/v2/things/{ids['thing_in']}"]}
    for kind in FILTER_KINDS:
        with httpx.Client(base_url=stack.url, headers={"X-Api-Key": world.keys[kind]["key"]}, timeout=30) as key:
            for path in readable:
                assert key.get(path).status_code == 200, (kind, path)
            for path in hidden[kind]:
                assert key.get(path).status_code == 403, (kind, path)


# ----- by construction: a write route that declares nothing is refused at start-up


def test_a_write_route_that_declares_nothing_is_found():
    router = APIRouter()

    @router.post("/forgot")
    def forgot(who: Principal = Depends(principal)) -> None: ...

    @router.delete("/declared")
    def declared(who: Principal = Depends(org_wide("things"))) -> None: ...

    @router.get("/read")
    def read(who: Principal = Depends(principal)) -> None: ...

    assert undeclared_writes(router.routes) == ["POST /forgot"]
