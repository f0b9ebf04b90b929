"""Seed 001 end to end: define metrics, a type, a site and a thing over HTTP, post
the seed's frames, and read them back from latest-event and from SQL."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import eventually
from tests.seed import SEED_FRAMES


def latest(api, thing_id: str) -> dict:
    reply = api.get(f"/v2/things/{thing_id}/latest-event")
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_seed_frames_come_back_from_latest_event_and_sql(api, stack, battery):
    reply = api.post(f"/v2/thing/{battery}/data", json=SEED_FRAMES)
    assert reply.status_code == 202, reply.text
    assert reply.json()["requestId"].startswith("req_")

    event = eventually(lambda: (e := latest(api, battery))["readings"] and e)
    assert event["timestamp"] == 1718884800000
    assert event["metrics"] == {"status": 1, "moduleSoC": 87.4, "moduleSoH": 98.1, "moduleVoltage": 52.3,
                                "moduleCurrent": 12.1}
    assert {r["timestamp"] for r in event["readings"]} == {1718884800000}

    # The analyst's view: plain SQL on the readings table, through `sluice sql`.
    query = (f"SELECT metric_id, toUnixTimestamp64Milli(ts) AS ms, value FROM {stack.settings.database}.readings "
             f"WHERE thing_id = '{battery}' ORDER BY value")
    out = subprocess.run([sys.executable, "-m", "sluice.cli", "sql", query], capture_output=True, text=True,
                         env={**os.environ, **stack.settings.to_env()}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "(5 rows)" in out.stdout
    for value in ("87.4", "98.1", "52.3", "12.1", "1718884800000"):
        assert value in out.stdout


def test_latest_is_by_event_time_not_arrival(api, stack, battery):
    assert api.post(f"/v2/thing/{battery}/data", json=SEED_FRAMES).status_code == 202
    newer = {"frames": [{"timestamp": 1718884900000, "metrics": {"moduleSoC": 80.0}}]}
    assert api.post(f"/v2/thing/{battery}/data", json=newer).status_code == 202
    eventually(lambda: latest(api, battery)["metrics"].get("moduleSoC") == 80.0)

    # A backfilled older frame arrives later: stored, but it does not become the latest.
    older = {"frames": [{"timestamp": 1718884700000, "metrics": {"moduleSoC": 10.0, "moduleSoH": 50.0}}]}
    assert api.post(f"/v2/thing/{battery}/data", json=older).status_code == 202
    stored = {"sql": f"SELECT count() FROM {stack.settings.database}.readings "
                     f"WHERE thing_id = '{battery}' AND value = 10"}
    eventually(lambda: api.post("/v2/admin/sql", json=stored).json()["rows"] == [[1]])
    event = latest(api, battery)
    assert event["metrics"]["moduleSoC"] == 80.0
    assert event["metrics"]["moduleSoH"] == 98.1


def test_unknown_thing_is_404_and_missing_key_is_401(api, stack):
    assert api.post("/v2/thing/thg_nope/data", json=SEED_FRAMES).status_code == 404
    import httpx

    reply = httpx.post(f"{stack.url}/v2/thing/thg_nope/data", json=SEED_FRAMES)
    assert reply.status_code == 401
    assert reply.json()["error"]["code"] == "UNAUTHORIZED"
    for header in ({"X-Api-Key": "slk_not-a-key"}, {"Authorization": "Bearer slk_not-a-key"}):
        reply = httpx.post(f"{stack.url}/v2/thing/thg_nope/data", json=SEED_FRAMES, headers=header)
        assert reply.status_code == 401 and "invalid" in reply.json()["error"]["message"]
    bearer = {"Authorization": f"Bearer {stack.settings.admin_key}"}
    assert httpx.get(f"{stack.url}/v2/things/thg_nope/latest-event", headers=bearer).status_code == 404
    # Two keys at once name no one caller: refused, whichever of them is valid; the same key twice is one.
    both = {**bearer, "X-Api-Key": "slk_not-a-key"}
    reply = httpx.get(f"{stack.url}/v2/things/thg_nope/latest-event", headers=both)
    assert reply.status_code == 401 and "different keys" in reply.json()["error"]["message"]
    both = {**bearer, "X-Api-Key": stack.settings.admin_key}
    assert httpx.get(f"{stack.url}/v2/things/thg_nope/latest-event", headers=both).status_code == 404


def test_unknown_routes_answer_in_the_error_shape(api):
    reply = api.get("/v2/no-such-thing")
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "NOT_FOUND"
    assert api.put("/v2/definitions/metrics").json()["error"]["code"] == "METHOD_NOT_ALLOWED"


def test_openapi_document_lists_the_routes(api):
    paths = api.get("/openapi.json").json()["paths"]
    for path in ("/v2/definitions/metrics", "/v2/definitions/thing-types", "/v2/sites",
                 "/v2/sites/{place_id}/things", "/v2/thing/{thing_id}/data", "/v2/things/{thing_id}/latest-event"):
        assert path in paths


def test_dimension_tables_give_analysts_names_and_units(api, stack, battery):
    assert api.post(f"/v2/thing/{battery}/data", json=SEED_FRAMES, headers={"Prefer": "wait=10"}).status_code == 200
    db = stack.settings.database
    query = (f"SELECT t.name, m.name, m.unit_label, r.value FROM {db}.readings AS r "
             f"JOIN (SELECT * FROM {db}.metric_definitions ORDER BY updated_at DESC LIMIT 1 BY org_id, metric_id) AS m "
             f"ON m.org_id = r.org_id AND m.metric_id = r.metric_id "
             f"JOIN (SELECT * FROM {db}.things ORDER BY updated_at DESC LIMIT 1 BY org_id, thing_id) AS t "
             f"ON t.org_id = r.org_id AND t.thing_id = r.thing_id "
             f"WHERE r.thing_id = '{battery}' ORDER BY m.name")
    found = eventually(lambda: (rows := api.post("/v2/admin/sql", json={"sql": query}).json()["rows"])
                       and len(rows) == 5 and rows)
    assert found[0] == ["Battery A1", "moduleCurrent", "A", 12.1]
    assert [r[1] for r in found] == ["moduleCurrent", "moduleSoC", "moduleSoH", "moduleVoltage", "status"]
    version = api.get(f"/v2/things/{battery}").json()["thingTypeVersionId"]
    types = f"SELECT display_name, length(metric_ids) FROM {db}.thing_types WHERE version_id = '{version}'"
    assert api.post("/v2/admin/sql", json={"sql": types}).json()["rows"][0] == ["Battery", 5]
