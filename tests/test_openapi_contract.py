"""The OpenAPI document tells the truth: schemathesis drives every route of the live
test stack with generated requests (valid and invalid) and runs all its checks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx

# Where schemathesis' expectations differ from this API's documented contract.
CONFIG = """
[checks.positive_data_acceptance]
# A schema-valid body may still name ids that do not exist (a type's metricIds, a
# thing's thingTypeId) or break a cross-field rule (enumValues need dataType String):
# the catalog answers 400 naming the field, and ingest answers the rulebook's 400/424
# for frames it cannot apply (unknown metric names). No schema can say that.
expected-statuses = ["2xx", "400", "401", "403", "404", "409", "424", "429"]

[checks.negative_data_rejection]
# The defaults, and 413: a body that breaks a length bound (a list longer than its
# maxItems) may well break the route's body limit first, and 413 rejects it too.
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "428", "429"]
"""


def own_objects(api: httpx.Client) -> dict[str, str]:
    """Objects of the test's own for the generated requests to reach past 404 (a metric, a type,
    a site and a thing of it), so that mutating them cannot disturb other tests."""
    metric = api.post("/v2/definitions/metrics", json={
        "name": "contractTemp", "dataType": "Double", "defaultAggregation": "Avg"}).json()["id"]
    thing_type = api.post("/v2/definitions/thing-types", json={"displayName": "Contract", "metricIds": [metric]})
    site = api.post("/v2/sites", json={"name": "Contract site"}).json()["id"]
    thing = api.post(f"/v2/sites/{site}/things", json={
        "thingName": "Contract thing", "thingTypeId": thing_type.json()["id"]}).json()["id"]
    template = api.post("/v2/templates", json={
        "name": "Contract template", "target": "ThingData", "records": "samples",
        "timestamp": {"path": "t", "format": "epochMillis"}, "metrics": {"contractTemp": "temp"}}).json()["id"]
    return {"metric_id": metric, "type_id": thing_type.json()["id"], "version_id": thing_type.json()["versionId"],
            "place_id": site, "thing_id": thing, "template_id": template}


def test_every_route_keeps_its_openapi_contract(stack, api, tmp_path: Path):
    config = tmp_path / "schemathesis.toml"
    ids = own_objects(api)
    config.write_text(CONFIG + "\n[parameters]\n" + "".join(f'"path.{k}" = "{v}"\n' for k, v in ids.items()))
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
    result = subprocess.run(
        # One worker: hypothesis parses lambdas' source with ast from its worker threads, and
        # Python 3.11's ast is not safe across threads ("AST constructor recursion depth mismatch").
        [st, "--config-file", str(config), "run", f"{stack.url}/openapi.json", "--checks", "all",
         "--max-examples", "15", "--seed", "1", "--no-color", "--generation-database", "none",
         "--request-timeout", "20", "-H", f"X-Api-Key: {stack.settings.admin_key}",
         # Ingest answers with the processor's verdict, so frames the schema rejects are seen rejected.
         "-H", "Prefer: wait=5"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-12000:] + result.stderr[-3000:]
    # The run exercised every operation the document declares.
    operations = sum(len(ops) for ops in api.get("/openapi.json").json()["paths"].values())
    assert f"Tested: {operations}\n" in result.stdout, result.stdout[-3000:]


def test_the_document_speaks_the_error_shape_and_allow_lists_every_method(api):
    document = api.get("/openapi.json").json()
    operations = [op for ops in document["paths"].values() for op in ops.values()]
    assert not any("422" in op["responses"] for op in operations)
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
