"""The OpenAPI document tells the truth: schemathesis drives every route of the live
test stack with generated requests (valid and invalid) and runs all its checks.

A request the document calls valid is accepted, or refused with a status the document
declares for a reason no schema can hold (a missing object, a taken name); a 400 for a
schema-valid request is tolerated only on the operations named below, each with the rule
the document cannot express. Any status an operation does not declare fails the run
(`status_code_conformance`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.seed import org_with_every_target

# Where schemathesis' expectations differ from this API's documented contract. Every status
# tolerated here must also be declared by the operation: status_code_conformance fails any other.
# Of several [[operations]] matching one operation, the first decides each option it sets.
CONFIG = """
[checks.positive_data_acceptance]
# A schema-valid request may still name an object its org does not have (404: the generator
# invents ids, in paths, bodies and queries) or a name already taken (409).
expected-statuses = ["2xx", "404", "409"]

[checks.negative_data_rejection]
# schemathesis' defaults, less 422 (this API answers 400 for a broken schema) and 5xx.
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "415", "428", "429"]

[[operations]]
# SQL: the statement must parse and be read-only, which no JSON Schema can say; and it runs
# within its bounds (422 naming the one it ran into, 429 when every query slot is taken).
include-name = ["POST /v2/admin/sql", "POST /v2/sql"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "413", "422", "429"]

[[operations]]
# Template expressions are JMESPath (a grammar, not a pattern) within compile-time bounds,
# and each of `metrics` names a metric defined in the org.
include-name = "POST /v2/templates"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "413"]

[[operations]]
# The same, and the template to replace may not exist.
include-name = "PUT /v2/templates/{template_id}"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404", "413"]

[[operations]]
# Ingest: the processor's rulebook judges readings against the catalog and the clock (a metric
# name on the thing's type, a value coercible to its data type, a timestamp at most a day ahead,
# a record field of the data source's schema, an item key present in the item, a template's
# records found in the payload; and X-Stream and ?stream= naming the same stream); 424 is a
# thing without a type, or an org without the preset.
include-path-regex = "^/(v2/thing/|api/|v1/assets/|restapi/)"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404", "413", "424"]

[[operations]]
# An integration's resource expression is JMESPath (a grammar), and an MQTT caCertificate must be
# a certificate TLS can load (PEM holding DER, which no pattern can check).
include-name = ["POST /v2/integrations", "PATCH /v2/integrations/{integration_id}"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404", "413"]

[[operations]]
# A thing's properties are checked against its type's property definitions (seed 001).
include-name = ["POST /v2/sites/{place_id}/things", "POST /v2/fleets/{place_id}/things",
                "PATCH /v2/things/{thing_id}"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404", "413"]

[[operations]]
# enumValues are checked against the stored metric: only an enum-shaped metric has them,
# and they may only grow.
include-name = "PATCH /v2/definitions/metrics/{metric_id}"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404", "413"]

[[operations]]
# Times are epoch ms or ISO 8601 dates that exist, within 1970–2200, `from` before `to`, and
# at most 10,000 buckets; a text metric aggregates only by Count. Relations of parameters
# with each other and with the catalog, which OpenAPI cannot state.
include-name = ["GET /v2/things/{thing_id}/history", "GET /v2/things/{thing_id}/aggregates"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404"]

[[operations]]
# A body that breaks a bound (a list longer than its maxItems, a string longer than its
# maxLength) may break the route's body limit first, and 413 refuses it too.
include-method-regex = "^(POST|PUT|PATCH)$"
checks.negative_data_rejection.expected-statuses = [
    "400", "401", "403", "404", "405", "406", "409", "413", "415", "428", "429"]
# Each field's bound holds, but together they can exceed the body limit (1000 enum values
# of 200 characters are 200 KB): JSON Schema bounds fields, not a document's size.
checks.positive_data_acceptance.expected-statuses = ["2xx", "404", "409", "413"]
"""


def created(reply: httpx.Response, status: int = 201) -> dict:
    assert reply.status_code == status, reply.text
    return reply.json()


@dataclass
class Org:
    """A tenant of the test's own, with one object of each kind for the generated requests to
    reach past 404 (mutating them disturbs no other test)."""

    key: str  # its admin key's secret
    ids: dict[str, str]  # path parameter → the id every operation gets
    only: dict[str, dict[str, str]]  # operation (`METHOD path`, or a path regex) → its own parameters


def own_org(stack) -> Org:
    made = org_with_every_target(stack.url, stack.settings.admin_key, "contract")
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": made["key"]}, timeout=30) as api:
        fleet = created(api.post("/v2/fleets", json={"name": "Contract fleet"}))["id"]
        preset = created(api.post("/v2/definitions/presets/iso15143-3"))
        asset = created(api.post(f"/v2/fleets/{fleet}/things", json={
            "thingName": "Contract asset", "thingTypeId": preset["thingTypeId"]}))["id"]
        reader = created(api.post("/v2/api-keys", json={"name": "contract reader", "scopes": ["read"]}))["id"]
        sent = created(api.post(f"/v2/thing/{made['thing']}/data", json={
            "frames": [{"timestamp": 1718884800000, "metrics": {"level": 21.5}}]}), 202)["requestId"]
        # Deleting gets objects of its own, so the operations after it still find theirs.
        doomed_thing = created(api.post(f"/v2/sites/{made['site']}/things", json={"thingName": "Doomed"}))["id"]
        doomed_template = created(api.post("/v2/templates", json={
            "name": "Doomed", "target": "ThingData", "records": "samples",
            "timestamp": {"path": "t", "format": "epochMillis"}, "metrics": {"level": "v"}}))["id"]
        doomed_key = created(api.post("/v2/api-keys", json={"name": "doomed", "scopes": ["read"]}))["id"]
    ids = {"metric_id": made["metric"], "type_id": made["type"], "version_id": made["version"],
           "place_id": made["site"], "thing_id": made["thing"], "template_id": made["template"],
           "preset": "iso15143-3", "asset_id": asset, "harbor_id": made["harbor"], "stream_ref": made["stream"],
           "datasource_id": made["datasource"], "key_id": reader, "request_id": sent}
    only = {"DELETE /v2/things/{thing_id}": {"path.thing_id": doomed_thing},
            "DELETE /v2/templates/{template_id}": {"path.template_id": doomed_template},
            "DELETE /v2/api-keys/{key_id}": {"path.key_id": doomed_key},
            # A metric of the org, or these routes never get past 404.
            "GET /v2/things/{thing_id}/aggregates": {"query.metrics": "level"},
            "GET /v2/sites/{place_id}/latest": {"query.metric": "level"},
            "GET /v2/fleets/{place_id}/latest": {"path.place_id": fleet, "query.metric": "level"},
            "POST /restapi/datasource/insert": {"body.datasource_id": made["datasource"]},  # an id in the body
            "^/v2/fleets/": {"path.place_id": fleet}}
    return Org(made["key"], {f"path.{name}": value for name, value in ids.items()}, only)


def schemathesis_config(org: Org, platform_key: str) -> str:
    def table(values: dict[str, str]) -> str:
        return "".join(f"{json.dumps(name)} = {json.dumps(value)}\n" for name, value in values.items())

    def operations(selector: str) -> str:
        return "\n[[operations]]\n" + (f"include-name = {json.dumps(selector)}\n" if " " in selector
                                        else f"include-path-regex = {json.dumps(selector)}\n")

    def auth(key: str) -> str:
        """The key for both of the document's schemes, so schemathesis knows it for the credential
        it is (`ignored_auth` sends it wrong or not at all, and expects 401)."""
        return (f"[auth.openapi.ApiKey]\napi_key = {json.dumps(key)}\n"
                f"[auth.openapi.Bearer]\nbearer = {json.dumps(key)}\n")
    # The org's admin key for every route but the two only the platform admin may call.
    return ("[headers]\nPrefer = \"wait=5\"\n"  # ingest answers with the processor's verdict
            + auth(org.key) + CONFIG
            + '\n[[operations]]\ninclude-name = ["POST /v2/orgs", "POST /v2/admin/sql"]\n[operations.headers]\n'
            + table({"X-Api-Key": platform_key, "Authorization": f"Bearer {platform_key}"})
            + "".join(operations(selector) + "[operations.parameters]\n" + table(values)
                      for selector, values in org.only.items())
            + "\n[parameters]\n" + table(org.ids))


def test_every_route_keeps_its_openapi_contract(stack, tmp_path: Path):
    config = tmp_path / "schemathesis.toml"
    config.write_text(schemathesis_config(own_org(stack), stack.settings.admin_key))
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
    result = subprocess.run(
        # One worker: hypothesis parses lambdas' source with ast from its worker threads, and
        # Python 3.11's ast is not safe across threads ("AST constructor recursion depth mismatch").
        [st, "--config-file", str(config), "run", f"{stack.url}/openapi.json", "--checks", "all",
         "--max-examples", "50", "--seed", "1", "--no-color", "--generation-database", "none",
         "--request-timeout", "20"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-12000:] + result.stderr[-3000:]
    # The run exercised every operation the document declares.
    operations = sum(len(ops) for ops in httpx.get(f"{stack.url}/openapi.json").json()["paths"].values())
    assert f"Tested: {operations}\n" in result.stdout, result.stdout[-3000:]
    stack.check_alive()


def test_the_document_speaks_the_error_shape_and_allow_lists_every_method(api):
    document = api.get("/openapi.json").json()
    operations = [op for ops in document["paths"].values() for op in ops.values()]
    # FastAPI's validation 422 is gone (a broken schema is 400); a 422 a route declares stays: seed 004's
    # status table, analyst SQL's bounds (the admin's and an org's).
    declared = sorted(path for path, ops in document["paths"].items() for op in ops.values() if "422" in op["responses"])
    assert declared == ["/restapi/datasource/insert", "/v2/admin/sql", "/v2/sql"]
    assert all({"401", "403", "413"} <= set(op["responses"]) for op in operations if op.get("security"))
    ingest = document["paths"]["/v2/thing/{thing_id}/data"]["post"]["responses"]
    assert {"400", "404", "424", "429", "503"} <= set(ingest)
    assert ingest["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    limit = next(p for p in document["paths"]["/v2/definitions/metrics"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["minimum"] == 1 and limit["schema"]["maximum"] == 1000
    # A path's methods span several routes; Allow names them all.
    reply = api.options("/v2/api-keys")
    assert reply.status_code == 204 and reply.headers["Allow"] == "GET, OPTIONS, POST"
    reply = api.put("/v2/things/thg_x")
    assert reply.status_code == 405 and reply.headers["Allow"] == "DELETE, GET, OPTIONS, PATCH"
    assert reply.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
