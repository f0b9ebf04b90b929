"""A request's share of the processor (processors.budget), without services: expressions too
costly in shape are refused when a template is compiled, and one that is costly in use is
stopped at the request's CPU budget with a 422 BUDGET_EXCEEDED verdict and its dead letter."""

from __future__ import annotations

import gc
import time

import jmespath
import pytest

from catalog.templates import MAX_MULTISELECT, TemplateCompileError, compile_revision
from processors.budget import Budget, BudgetedSearch
from processors.templates import map_template
from tests.test_template_mapper import TABLE, THING, revision

WIDE = "[" + ",".join(["@"] * MAX_MULTISELECT) + "]"
# Within every bound of shape (map() is a function, not a projection), and still 32^4 steps per record.
FAN_OUT = f"length(map(&map(&{WIDE}, {WIDE}), {WIDE}))"


@pytest.mark.parametrize("expression, reason", [
    ("[" + ",".join(["@"] * 140) + "]", "a multi-select of 140 elements"),  # the probe's expression
    ("a[*].b[*].c[*].d[*].e[*]", "more than 4 nested projections"),
    ("a" + ".a" * 300, "more than 256 parts"),
])
def test_an_expression_too_costly_in_shape_is_refused_when_compiled(expression, reason):
    with pytest.raises(TemplateCompileError, match=reason):
        compile_revision(revision(records=expression))


def test_the_budgeted_search_answers_as_jmespath_does():
    # It reaches into JMESPath's tree interpreter: an upgrade that moves it fails here, loudly.
    data = {"items": [{"t": 3, "v": "x", "tags": ["a", "b"]}, {"t": 1, "v": "y", "tags": []}], "n": None}
    search = BudgetedSearch(Budget(5))
    for expression in ("items[*].v", "sort_by(items, &t)[*].t", "items[?t > `1`].{v: v, k: length(tags)}",
                       "items[].tags[]", "max_by(items, &t).v", "n || `7`", "items | [0].t", WIDE):
        assert search.search(jmespath.compile(expression), data) == jmespath.search(expression, data), expression


def envelope(rev: dict, records: int) -> dict:
    import orjson

    body = {"data": {"readings": [{"ts": 1718884800000 + i, "soc": 1.0, "state": {"code": i}} for i in range(records)]}}
    return {"request_id": "req_costly", "org_id": "org_a", "key_id": "key_1", "route": "thing_template",
            "received_at": 1718884800000, "thing_id": "thg_1", "stream": None,
            "template_id": f"{rev['id']}@{rev['revision']}", "body": orjson.dumps(body)}


def judge_costly(budget_s: float, preview: bool = False):
    """The outcome, the thread's CPU seconds judging took, and the share of them the garbage
    collector took: a full collection of the whole process's heap can start between two checks
    and is the heap's cost, not the request's (after 700 tests in one process, CI measured a
    0.2 s pause there and a request that ran 0.50 s against a 0.3 s budget)."""
    rev = revision(metrics={"moduleSoC": "soc", "status": FAN_OUT})
    entities = {("template_revision", f"{rev['id']}@1"): rev, ("thing", "thg_1"): THING}
    collecting = [0.0, 0.0]  # seconds collected, when the current collection began

    def timed(phase: str, info: dict) -> None:
        if phase == "start":
            collecting[1] = time.thread_time()
        else:
            collecting[0] += time.thread_time() - collecting[1]

    gc.callbacks.append(timed)
    try:
        started = time.thread_time()
        outcome = map_template(envelope(rev, 2000), lambda kind, entity_id, org=None: entities.get((kind, entity_id)),
                               lambda version: TABLE, preview=preview, budget=Budget(budget_s))
        return outcome, time.thread_time() - started, collecting[0]
    finally:
        gc.callbacks.remove(timed)


def test_a_request_costly_in_use_stops_at_its_budget_with_a_verdict_and_a_dead_letter():
    outcome, spent, collected = judge_costly(0.3)
    # Past the budget, the request's own work goes on only until the next check (~2 ms here).
    assert spent - collected < 0.3 + 0.05, f"the request ran {spent:.2f} s of CPU ({collected:.2f} s of it " \
                                           "collecting garbage) against a 0.3 s budget"
    assert outcome.verdict["status"] == "rejected" and outcome.verdict["http_status"] == 422, outcome.verdict
    assert outcome.verdict["errors"][0]["code"] == "BUDGET_EXCEEDED"
    assert outcome.frames == []  # nothing of it is written
    assert [d["reason"] for d in outcome.dead_letters] == ["BUDGET_EXCEEDED"]
    preview, _, _ = judge_costly(0.3, preview=True)
    assert preview.verdict["errors"][0]["code"] == "BUDGET_EXCEEDED" and not preview.dead_letters



def costly_org(stack, root):
    """Another org beside the root's, with a thing and a template whose expressions fan out:
    (its client, the template route of its thing, a body of 2,000 records for it)."""
    import secrets

    import httpx

    from tests.seed import register_battery, register_battery_type

    org = root.post("/v2/orgs", json={"name": f"costly {secrets.token_hex(3)}"}).json()
    client = httpx.Client(base_url=stack.url, headers={"X-Api-Key": org["adminKey"]["key"]}, timeout=60)
    thing = register_battery(client, *register_battery_type(client))
    template = client.post("/v2/templates", json={
        "name": "costly", "target": "ThingData", "records": "data.readings",
        "timestamp": {"path": "ts", "format": "epochMillis"}, "metrics": {"status": FAN_OUT}})
    assert template.status_code == 201, template.text
    body = {"data": {"readings": [{"ts": 1718884800000 + i} for i in range(2000)]}}
    return client, f"/v2/thing/{thing}/data/template/{template.json()['id']}", body

def test_another_orgs_sync_requests_stay_fast_while_one_org_posts_costly_templates(kafka_bootstrap, tmp_path):
    """The probe's case on a real stack: one org posts templates that would compute for a minute
    (on main before the budget, another org's sync request waited 30 s and fell back to 202).
    Every victim request must still get its verdict (200, not the 202 a timed-out wait falls back
    to) and every costly one its BUDGET_EXCEEDED. The costly org's requests are judged beside the
    others (processors.lanes), so a victim no longer waits for a whole costly request: before the
    lane, its median was a budget and more (618 ms against a 500 ms budget, a 15 ms baseline),
    because each victim request came just after a costly one, both released by the same verdict.
    The bound asserted is loose (a shared 2-core machine); the latencies are printed."""
    import statistics
    import threading

    import httpx

    from sluice.stack import Stack
    from tests.conftest import session_settings
    from tests.seed import SEED_FRAMES, register_battery, register_battery_type

    budget_s = 0.5
    stack = Stack(session_settings(kafka_bootstrap, tmp_path, rate_limit=0.0, request_cpu_budget_s=budget_s))
    stack.start()
    root = httpx.Client(base_url=stack.url, headers={"X-Api-Key": stack.settings.admin_key}, timeout=60)
    try:
        victim = register_battery(root, *register_battery_type(root))
        attacker, path, body = costly_org(stack, root)

        def sync_latency(i: int) -> float:
            frames = {"frames": [{**SEED_FRAMES["frames"][0], "timestamp": 1718884800000 + i}]}
            started = time.monotonic()
            reply = root.post(f"/v2/thing/{victim}/data", json=frames, headers={"Prefer": "wait=30"})
            assert reply.status_code == 200, reply.text
            return time.monotonic() - started

        for i in range(5):
            sync_latency(i)  # warm
        baseline = sorted(sync_latency(100 + i) for i in range(40))
        verdicts: list[dict] = []
        stop = threading.Event()

        def attack() -> None:  # as the probe did: one client, each request waiting for its verdict
            while not stop.is_set():
                reply = attacker.post(path, json=body, headers={"Prefer": "wait=30"})
                verdicts.append(reply.json())

        thread = threading.Thread(target=attack)
        thread.start()
        try:
            time.sleep(1)
            during = sorted(sync_latency(200 + i) for i in range(40))
        finally:
            stop.set()
            thread.join(60)
        p99 = lambda xs: xs[int(0.99 * (len(xs) - 1))]  # noqa: E731
        print(f"\nvictim sync p50/p99: alone {statistics.median(baseline) * 1000:.0f}/{p99(baseline) * 1000:.0f} ms, "
              f"beside costly templates {statistics.median(during) * 1000:.0f}/{p99(during) * 1000:.0f} ms "
              f"(budget {budget_s * 1000:.0f} ms); {len(verdicts)} costly requests judged")
        assert verdicts and all(v["error"]["code"] == "BUDGET_EXCEEDED" for v in verdicts), verdicts[:1]
        assert p99(during) < 15  # bounded by budgets; before them a victim waited 30 s and got a 202
        assert statistics.median(during) < 2 * statistics.median(baseline) + budget_s / 2
    finally:
        root.close()
        stack.stop()


def test_a_batch_is_judged_cheapest_org_first_keeping_each_orgs_order():
    from processors.budget import OrgCosts

    now = [0.0]
    costs = OrgCosts(half_life=10, clock=lambda: now[0])
    batch = [("a", 1), ("b", 1), ("a", 2), ("c", 1), ("b", 2)]
    assert costs.order(batch, lambda r: r[0]) == batch  # nobody cost anything yet: as they came
    costs.spent("a", 0.5)
    costs.spent("b", 0.01)
    assert costs.order(batch, lambda r: r[0]) == [("c", 1), ("b", 1), ("b", 2), ("a", 1), ("a", 2)]
    now[0] = 10
    assert abs(costs.cost("a") - 0.25) < 1e-9  # halved after one half-life


def test_a_set_aside_request_cut_short_by_a_processor_crash_is_judged_after_the_restart(kafka_bootstrap, tmp_path):
    """processors.lanes judges a costly org's request beside its batch, and the batch is acked
    without it: its message must stay unacked until its outputs are, or the processor's commit
    (every second) carries it and a crash loses it. The costly request takes a 3 s budget; the
    processor is SIGKILLed 2 s in, after a commit, before its verdict: after the restart it is
    judged, and a request of another org taken after it was answered meanwhile."""
    import signal

    import httpx

    from sluice.stack import Stack
    from tests.conftest import eventually, session_settings
    from tests.seed import SEED_FRAMES, register_battery, register_battery_type
    from tests.test_ingest_log import verdict_of

    # One partition: the other org's request is the costly one's next offset, the case where Faust
    # alone would commit past a message in flight (processors.consumer).
    stack = Stack(session_settings(kafka_bootstrap, tmp_path, rate_limit=0.0, request_cpu_budget_s=3.0,
                                   partitions=1))
    stack.start()
    root = httpx.Client(base_url=stack.url, headers={"X-Api-Key": stack.settings.admin_key}, timeout=60)
    try:
        victim = register_battery(root, *register_battery_type(root))
        costly, path, body = costly_org(stack, root)
        first = costly.post(path, json=body, headers={"Prefer": "wait=30"})  # makes the org costly
        assert first.json()["error"]["code"] == "BUDGET_EXCEEDED", first.text

        accepted = costly.post(path, json=body, headers={"Prefer": "respond-async"})
        assert accepted.status_code == 202, accepted.text
        sent = time.monotonic()
        frames = {"frames": [{**SEED_FRAMES["frames"][0], "timestamp": 1718884900000}]}
        beside = root.post(f"/v2/thing/{victim}/data", json=frames, headers={"Prefer": "wait=30"})
        assert beside.status_code == 200, beside.text  # judged while the costly one is in the lane
        time.sleep(max(0.0, 2.0 - (time.monotonic() - sent)))
        assert verdict_of(root, accepted.headers["X-Request-Id"]) is None  # still being judged
        stack.restart("processor", signal.SIGKILL)

        verdict = eventually(lambda: verdict_of(costly, accepted.headers["X-Request-Id"]), timeout=60)
        assert verdict["errors"][0]["code"] == "BUDGET_EXCEEDED", verdict
    finally:
        root.close()
        stack.stop()
