"""The read API over time, on the whole stack: history pages, aggregates from rollups and
raw alike (after a client re-sends frames too), a site's latest values, other orgs' 404."""

from __future__ import annotations

import secrets

import httpx

from tests.conftest import eventually
from tests.seed import register_battery

T0 = 1718884800000  # 2024-06-20T12:00:00Z, on an hour boundary
HOUR = 3_600_000


def _post(api: httpx.Client, thing: str, frames: list[dict]) -> None:
    """Send frames and wait until the sink stored every value (a verdict comes before that)."""
    reply = api.post(f"/v2/thing/{thing}/data", json={"frames": frames}, headers={"Prefer": "wait=10"})
    assert reply.status_code == 200, reply.text
    values = sum(len(f["metrics"]) for f in frames)
    # The request's own rows: a later re-send may merge away older copies, never these.
    stored = {"sql": f"SELECT count() FROM readings WHERE request_id = '{reply.json()['requestId']}'"}
    eventually(lambda: api.post("/v2/admin/sql", json=stored).json()["rows"] == [[values]])


def _get(api: httpx.Client, path: str, status: int = 200, **params) -> dict:
    reply = api.get(path, params=params)
    assert reply.status_code == status, reply.text
    return reply.json()


def test_history_pages_and_aggregates_from_rollups_and_raw_agree(api, battery):
    frames = [{"timestamp": T0 + i * 30_000,
               "metrics": {"moduleVoltage": 50 + (i % 7) * 0.25, "moduleSoC": 90 - i * 0.125, "status": i % 3}}
              for i in range(120)]  # one hour, every 30 s
    _post(api, battery, frames)
    resent = [dict(f, metrics={**f["metrics"]}) for f in frames[:40]]  # a client re-sends a third of them
    resent[3]["metrics"]["moduleVoltage"] = 60.0  # with one correction
    _post(api, battery, resent)
    voltage = [f["metrics"]["moduleVoltage"] for f in resent] + [f["metrics"]["moduleVoltage"] for f in frames[40:]]

    # History: every (timestamp, metric) exactly once, in order, over pages of 7.
    seen, cursor = [], None
    while True:
        page = _get(api, f"/v2/things/{battery}/history", metrics="moduleVoltage,status", limit=7,
                    **({"cursor": cursor} if cursor else {}))
        seen += [(r["timestamp"], r["metric"], r["value"]) for r in page["items"]]
        if not (cursor := page["nextCursor"]):
            break
    assert sorted((ts, m) for ts, m, _ in seen) == sorted((T0 + i * 30_000, m) for i in range(120)
                                                         for m in ("moduleVoltage", "status"))
    assert [ts for ts, _, _ in seen] == sorted(ts for ts, _, _ in seen)  # by timestamp (then metric id)
    assert [v for _, m, v in seen if m == "moduleVoltage"] == voltage
    assert [v for _, m, v in seen if m == "status"] == [i % 3 for i in range(120)]
    past = _get(api, f"/v2/things/{battery}/history", cursor=f"{T0 + HOUR}:mdef_")  # any position is a cursor
    assert past["items"] == [] and past["nextCursor"] is None
    newest = _get(api, f"/v2/things/{battery}/history", order="desc", limit=1, metrics="moduleSoC")["items"]
    assert [(r["timestamp"], r["value"]) for r in newest] == [(T0 + 119 * 30_000, 90 - 119 * 0.125)]

    # Aggregates: the metric's defaultAggregation (Avg, Last), from a rollup and from raw alike.
    query = {"metrics": "moduleVoltage,moduleSoC,status", "from": T0, "to": T0 + HOUR}
    for interval, expected in (("5m", "rollup_1m"), ("1h", "rollup_1h"), ("1d", "rollup_1h"), ("30s", "raw")):
        auto = _get(api, f"/v2/things/{battery}/aggregates", interval=interval, **query)
        raw = _get(api, f"/v2/things/{battery}/aggregates", interval=interval, source="raw", **query)
        # 30 s is no multiple of a rollup: raw readings answer.
        assert (auto["source"], raw["source"]) == (expected, "raw")
        assert auto["series"] == raw["series"]
    five = {s["metric"]: s for s in _get(api, f"/v2/things/{battery}/aggregates", interval="5m", **query)["series"]}
    assert five["moduleVoltage"]["aggregation"] == "Avg" and five["moduleSoC"]["aggregation"] == "Last"
    assert [b["count"] for b in five["moduleVoltage"]["buckets"]] == [10] * 12  # no re-sent reading counted twice
    assert five["moduleVoltage"]["buckets"][0]["value"] == sum(voltage[:10]) / 10
    assert five["moduleSoC"]["buckets"][-1] == {"timestamp": T0 + 55 * 60_000, "value": 90 - 119 * 0.125,
                                                "count": 10}
    total = _get(api, f"/v2/things/{battery}/aggregates", interval="1h", aggregation="Sum", **query)
    volts = next(s for s in total["series"] if s["metric"] == "moduleVoltage")
    assert volts["buckets"] == [{"timestamp": T0, "value": sum(voltage), "count": 120}]
    # The analyst's SQL (the documented FINAL-free pattern) gives the API's numbers.
    by_sql = api.post("/v2/admin/sql", json={"sql": f"""
        SELECT sum(r.value), count(), avg(r.value) FROM (
            SELECT metric_id, value FROM readings WHERE thing_id = '{battery}'
            ORDER BY version DESC LIMIT 1 BY thing_id, metric_id, ts) AS r
        JOIN (SELECT metric_id FROM metric_definitions WHERE name = 'moduleVoltage'
              ORDER BY updated_at DESC LIMIT 1 BY org_id, metric_id) AS m USING (metric_id)"""}).json()["rows"]
    hourly_avg = next(s for s in _get(api, f"/v2/things/{battery}/aggregates", interval="1h", **query)["series"]
                      if s["metric"] == "moduleVoltage")["buckets"][0]["value"]
    assert by_sql == [[volts["buckets"][0]["value"], 120, hourly_avg]]
    off_grid = _get(api, f"/v2/things/{battery}/aggregates", interval="1m", metrics="status", **{
        "from": T0 + 10_000, "to": T0 + HOUR})
    assert off_grid["source"] == "raw"
    recent = _get(api, f"/v2/things/{battery}/aggregates", interval="1h", metrics="status")  # the last 100 hours
    assert recent["source"] == "rollup_1h" and recent["to"] % HOUR == 0 and recent["to"] - recent["from"] == 100 * HOUR
    # A metric that names nothing is not found, like an id in the path.
    assert _get(api, f"/v2/things/{battery}/aggregates", 404, interval="1m", metrics="nope", **{
        "from": T0, "to": T0 + HOUR})["error"]["details"] == {"field": "metrics", "id": "nope"}


def test_a_sites_latest_respects_key_filters_and_orgs(stack, api, battery_type):
    _, type_id = battery_type
    site = api.post("/v2/sites", json={"name": f"Plant {secrets.token_hex(3)}"}).json()["id"]
    one, two, quiet = (register_battery(api, site, type_id) for _ in range(3))
    _post(api, one, [{"timestamp": T0, "metrics": {"moduleSoC": 50.0}},
                     {"timestamp": T0 + 1000, "metrics": {"moduleSoC": 51.0}}])
    _post(api, two, [{"timestamp": T0 + 5000, "metrics": {"moduleSoC": 70.0}}])
    _post(api, two, [{"timestamp": T0, "metrics": {"moduleSoC": 10.0}}])  # a backfill: not the latest

    latest = _get(api, f"/v2/sites/{site}/latest", metric="moduleSoC")
    assert latest["metric"] == "moduleSoC" and latest["unit"] == "%"
    assert {i["thingId"]: (i["timestamp"], i["value"]) for i in latest["items"]} == {
        one: (T0 + 1000, 51.0), two: (T0 + 5000, 70.0), quiet: (None, None)}
    _get(api, f"/v2/fleets/{site}/latest", 404, metric="moduleSoC")  # a site is no fleet

    # A key limited to one thing sees that thing only.
    key = api.post("/v2/api-keys", json={"name": "one thing", "scopes": ["read"],
                                         "filters": {"thingIds": [one]}}).json()["key"]
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": key}, timeout=30) as limited:
        assert [i["thingId"] for i in _get(limited, f"/v2/sites/{site}/latest", metric="moduleSoC")["items"]] == [one]
        _get(limited, f"/v2/things/{two}/history", 403)

    # Another org finds none of it.
    org = api.post("/v2/orgs", json={"name": f"tenant {secrets.token_hex(3)}"}).json()
    with httpx.Client(base_url=stack.url, headers={"X-Api-Key": org["adminKey"]["key"]}, timeout=30) as other:
        _get(other, f"/v2/sites/{site}/latest", 404, metric="moduleSoC")
        _get(other, f"/v2/things/{one}/history", 404)
        _get(other, f"/v2/things/{one}/aggregates", 404, interval="1h", metrics="moduleSoC")
