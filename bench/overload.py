"""Overload as users meet it: the end-to-end pipeline offered 1×, 1.25×, 1.5× and 2× what it drains.

One stack as end_to_end's (edge with the embedded chDB sink, processor), shedding at the
default `SLUICE_ADMIT_BACKLOG_S`; its drain measured as end_to_end measures it (a burst
worked off). Then, for each multiple, `bench.loadgen` paced at that multiple of the drain
for a warm-up and `hold` seconds, and for the measured part:
- goodput: values becoming queryable per second (count() over the load's event-time slot,
  polled every second through the edge's admin SQL) ÷ the same run's drain;
- shed share: the requests answered 503 ÷ all sent;
- freshness p50/p99: for requests to a few probe things, the client's 202 → the first poll
  (every 50 ms) that finds the request's first row;
- another key's sync replies: SYNC_RATE requests/s of one frame with `Prefer: wait=5` beside the
  load, p99 of the 200s (a sync request is never shed; a reply past 5 s is a 202, counted apart).
After each load the bench waits until its rows stop arriving, so the next starts drained.

What a million values cost (`bench.cpu_cost`): while each load runs, `bench.stage_monitor`
samples the CPU of every process (edge, processor, broker, load client) and of the edge's
threads by kind of work; over the measured part of the 1× load, the pipeline at its drain,
each process's CPU-seconds ÷ millions of values landed in the same span are rows
(`overload.cpu_s_per_million.*`). Before the loads, the bench's own polls run for
`IDLE_S` with no load, so what they cost the edge is known. From the four loads' edge
HTTP CPU, less that, and their accepted and shed requests per second, a least-squares fit
gives the HTTP CPU of an accepted request and of a shed one.

Then the highest offered rate whose lags stay flat for a minute, found by bisection between
0.5× and 2× the drain (4 steps; 2 of 10 s with --quick): a rate holds when nothing is shed
and the lag of the processors (raw) and of the readings sink (frames), summed, grew by less
than two seconds' worth of the offered requests from the first to the last 10 s of the
minute. Each step starts drained.
Blocks for about 11 minutes (about 2 with --quick).
"""

from __future__ import annotations

import dataclasses
import time

from bench import fixtures as fx
from bench.common import Context, Row, Stat
from bench.cpu_cost import cost_rows, per_million, request_costs
from bench.end_to_end import (CONCURRENCY, FRAMES, FRESH_POLL_S, METRICS, PROBES, VALUES, Plan, Slots, _count_at,
                              _drain, _Probe, _read_samples, _visible, _within)
from bench.loadgen import collect, launch, percentile
from bench.stack_setup import BenchStack, Fleet
from bench.stage_monitor import StageMonitor

MULTIPLES = (1.0, 1.25, 1.5, 2.0)
TARGET_GOODPUT = 0.9  # × drain, at 1.25× and 2× (issue 25)
TARGET_FRESHNESS_P99_MS = 2000  # under 2× overload
TARGET_SYNC_P99_MS = 100  # another key's sync replies under 2× overload
SYNC_RATE = 5  # requests/s of one frame, `Prefer: wait=5`, from a key of its own, beside each load
SETTLED_S = 3.0  # a load's rows have all arrived when the count stood still this long
LAG_EVERY_S = 2.0
CPU_EVERY_S = 4.0  # the stage monitor's period while a load runs (each sample scrapes the edge's /metrics)
IDLE_S = 12.0  # the bench's polls alone, before the loads


def run(ctx: Context) -> list[Row]:
    plan = Plan.of(ctx)
    warmup, hold = (2.0, 6.0) if ctx.quick else (10.0, 40.0)
    slots = Slots()
    with BenchStack(ctx, "overload") as bench:
        fleet = bench.register(things=plan.things)
        other_key = bench.client.post("/v2/api-keys", json={"name": "sync beside the overload",
                                                            "scopes": ["write"]}).raise_for_status().json()["key"]
        drain = _drain(bench, fleet, slots, plan)
        rows = [Row("overload.drain_values_per_s", "overload: pipeline drain values/s", "values/s",
                    Stat.of([drain]), note="a burst accepted at full speed, its start → 90 % of it visible; "
                                           "what the multiples below are of")]
        every = 1.0 if ctx.quick else CPU_EVERY_S  # a --quick load is measured for 6 s
        monitor = StageMonitor(bench, bench.pids(), every=every, parts_every=float("inf"))
        try:
            idle = _idle(bench, fleet, slots, monitor, IDLE_S if not ctx.quick else 2 * CPU_EVERY_S)
            spent = {}
            for multiple in MULTIPLES:
                offered, spent[multiple] = _offer(bench, fleet, slots, plan, multiple, drain, warmup, hold, monitor,
                                                  other_key)
                rows += offered
        finally:
            monitor.close()
        rows += _cost(spent, idle)
        minute, steps = (10.0, 2) if ctx.quick else (60.0, 4)
        flat, tried = _highest_flat(bench, fleet, slots, plan, drain, minute, steps)
        rows.append(Row("overload.flat_values_per_s", f"overload: highest rate with flat lags for {minute:.0f} s",
                        "values/s", Stat.of([flat]), baseline="overload.drain_values_per_s",
                        note=f"bisection between 0.5× and 2× drain: {'; '.join(tried)}"))
        rows += _against_flat(rows, drain, flat)
        bench.check_alive()
    return rows


def _against_flat(rows: list[Row], drain: float, flat: float) -> list[Row]:
    """Each load's goodput ÷ the highest rate found to hold: a burst's drain can overstate what the pipeline
    sustains (BENCHMARKS.md, "Overload"), the flat rate is what it holds for a minute."""
    if not flat:
        return []
    return [Row(row.key.replace("goodput_ratio_", "goodput_vs_flat_"),
                row.label.replace("÷ drain", "÷ highest flat rate"), "×", Stat.of([row.stat.median * drain / flat]),
                target=row.target, note=f"{row.stat.median * drain:,.0f} values/s queryable ÷ {flat:,.0f}")
            for row in rows if row.key.startswith("overload.goodput_ratio_")]


def _highest_flat(bench: BenchStack, fleet: Fleet, slots: Slots, plan: Plan, drain: float, minute: float,
                  steps: int) -> tuple[float, list[str]]:
    """(the highest rate found to hold, 0 if none; each rate tried and what it did)."""
    monitor = StageMonitor(bench, bench.pids())
    low, high, best, tried = 0.5 * drain, 2.0 * drain, 0.0, []
    try:
        for _ in range(steps):
            monitor.wait_drained(plan.drain_cap)
            rate = (low + high) / 2
            holds, what = _holds(bench, fleet, slots, monitor, rate, minute)
            tried.append(f"{rate:,.0f} {what}")
            if holds:
                best, low = rate, rate
            else:
                high = rate
        monitor.wait_drained(plan.drain_cap)
    finally:
        monitor.close()
    return best, tried


def _holds(bench: BenchStack, fleet: Fleet, slots: Slots, monitor: StageMonitor, values_per_s: float,
           minute: float) -> tuple[bool, str]:
    """Offer `values_per_s` for `minute` seconds: (whether the lags stayed flat and nothing was shed, why)."""
    rate = values_per_s / VALUES
    base, end = slots.take(requests=int(rate * minute) + 4 * CONCURRENCY)
    process = launch(bench.url, bench.key, fleet.thing_ids, frames=FRAMES, metrics=METRICS,
                     concurrency=2 * CONCURRENCY, duration=minute, rate=round(rate, 2), ts_base=base)
    lags: list[tuple[float, int]] = []
    started = time.time()
    while process.poll() is None:
        lags.append((time.time() - started, sum(monitor.lags().values())))
        time.sleep(LAG_EVERY_S)
    result = collect(process, timeout=30)
    _within(result, end)
    edge = min(10.0, minute / 3)
    first = [n for t, n in lags if t <= edge] or [0]
    last = [n for t, n in lags if t >= minute - edge] or [lags[-1][1] if lags else 0]
    grew = sum(last) / len(last) - sum(first) / len(first)
    shed = result["errors"].get("503", 0)
    holds = not shed and grew < 2 * rate
    return holds, f"{'flat' if holds else 'grew'} (lag {grew:+,.0f} messages, {shed} shed)"


@dataclasses.dataclass(frozen=True)
class _Spent:
    """The CPU a load's measured part took, and what it did meanwhile."""

    span: float  # seconds between the first and last CPU sample inside the measured part
    landed: float  # values that became queryable in that span
    cost: dict[str, float]  # process → CPU-seconds per million values landed (bench.cpu_cost.per_million)
    http_cores: float  # the edge's HTTP/Python threads
    polls_per_s: float  # the bench's own queries through the edge (freshness probe, visible count)
    accepted_per_s: float
    shed_per_s: float
    client_cores: float  # as the load client measured itself, warm-up included


def _spent(samples: list[dict], counts: list[tuple[float, int]], polls: list[float], result: dict) -> _Spent:
    """What the load's measured part cost; `polls`: when each of the bench's queries was sent."""
    start, stop = result["started_at"], result["ended_at"]
    kept = [s for s in samples if start <= s["t"] <= stop]
    if len(kept) < 2:
        return _Spent(0.0, 0.0, {}, 0.0, 0.0, 0.0, 0.0, result["client_cpu_cores"])
    first, last = kept[0]["t"], kept[-1]["t"]
    span = last - first
    landed = _count_at(counts, last) - _count_at(counts, first)
    elapsed = max(result["elapsed_s"], 1e-9)
    return _Spent(span, landed, per_million(kept, landed),
                  (kept[-1]["edge_work_cpu_s"]["http"] - kept[0]["edge_work_cpu_s"]["http"]) / span,
                  sum(1 for t in polls if first <= t <= last) / span,
                  result["ok"] / elapsed, result["errors"].get("503", 0) / elapsed, result["client_cpu_cores"])


def _idle(bench: BenchStack, fleet: Fleet, slots: Slots, monitor: StageMonitor, seconds: float) -> _Spent:
    """What the bench's polls alone cost, as they run during a load (the freshness probe every
    FRESH_POLL_S, the visible count every second); `cost` holds cores, not CPU per value."""
    base, end = slots.take()
    probe = _Probe(bench, fleet.metric_ids[0], fleet.thing_ids[:PROBES], base, end)
    monitor.start()
    stop, next_count, counted = time.time() + seconds, 0.0, []
    while time.time() < stop:
        probe.poll()
        if time.time() >= next_count:
            counted.append(_visible(bench, base)[0])
            next_count = time.time() + 1.0
        time.sleep(FRESH_POLL_S)
    monitor.stop()
    samples = monitor.samples
    if len(samples) < 2:
        return _Spent(0.0, 0.0, {}, 0.0, 0.0, 0.0, 0.0, 0.0)
    span = samples[-1]["t"] - samples[0]["t"]
    cores = per_million(samples, values=1e6 * span)  # "a million values" a second: CPU-seconds a second
    polls = sum(1 for t in probe.query_at + counted if samples[0]["t"] <= t <= samples[-1]["t"]) / span
    fx.log(f"idle, the bench's {polls:.1f} polls/s alone (cores): "
           + ", ".join(f"{n} {c:.3f}" for n, c in cores.items()))
    return _Spent(span, 0.0, cores, cores.get("edge_http", 0.0), polls, 0.0, 0.0, 0.0)


def _cost(spent: dict[float, _Spent], idle: _Spent) -> list[Row]:
    """The 1× load's CPU per million values; the HTTP CPU of an accepted and of a shed request."""
    per_poll = idle.http_cores / idle.polls_per_s if idle.polls_per_s else 0.0  # edge HTTP CPU-s a poll
    for multiple, load in spent.items():
        fx.log(f"{multiple:g}x: {load.landed:,.0f} values landed in {load.span:.0f} s; CPU-s per million: "
               + ", ".join(f"{name} {cost:.2f}" for name, cost in load.cost.items())
               + f"; edge HTTP {load.http_cores:.2f} cores for {load.accepted_per_s:,.0f} accepted + "
                 f"{load.shed_per_s:,.0f} shed requests/s and {load.polls_per_s:.1f} polls/s; the load client "
                 f"says it used {load.client_cores:.2f} cores")
    rows = []
    one = spent.get(1.0)
    if one and one.cost:
        polls = one.polls_per_s * per_poll / one.landed * one.span * 1e6
        rows += cost_rows("overload", "overload 1×", one.cost,
                          f"the 1× load, the pipeline at its drain: {one.landed:,.0f} values landed in "
                          f"{one.span:.0f} s ({one.landed / one.span:,.0f}/s), CPU from /proc over the same "
                          f"span; the bench's {one.polls_per_s:.1f} polls/s through the edge are in "
                          f"the figures (about {polls:.2f} of the edge's HTTP, at what they cost idle)")
    fit = request_costs([(max(0.0, load.http_cores - load.polls_per_s * per_poll), load.accepted_per_s,
                          load.shed_per_s) for load in spent.values() if load.span])
    if fit:
        accepted, shed = fit
        note = (f"least squares over the loads: edge HTTP/Python cores less the bench's polls ({per_poll * 1000:.2f} "
                "CPU-ms each, measured idle) = a × accepted/s + s × shed/s; " + "; ".join(
                    f"{m:g}×: {load.http_cores:.2f} cores, {load.accepted_per_s:,.0f} accepted + "
                    f"{load.shed_per_s:,.0f} shed/s, {load.polls_per_s:.0f} polls/s" for m, load in spent.items()))
        rows += [Row("overload.edge_http_cpu_ms_per_accepted_request", "overload: edge HTTP CPU per accepted request",
                     "CPU-ms", Stat.of([accepted * 1000]), lower_is_better=True, note=note),
                 Row("overload.edge_http_cpu_ms_per_shed_request", "overload: edge HTTP CPU per shed request",
                     "CPU-ms", Stat.of([shed * 1000]), lower_is_better=True,
                     baseline="overload.edge_http_cpu_ms_per_accepted_request", note=note)]
    return rows


def _offer(bench: BenchStack, fleet: Fleet, slots: Slots, plan: Plan, multiple: float, drain: float,
           warmup: float, hold: float, monitor: StageMonitor, other_key: str) -> tuple[list[Row], _Spent]:
    rate = multiple * drain / VALUES  # requests/s
    base, end = slots.take(requests=int(rate * (warmup + hold)) + 4 * CONCURRENCY)
    samples_path = bench.settings.state_dir / f"overload-{base}.csv"
    process = launch(bench.url, bench.key, fleet.thing_ids, frames=FRAMES, metrics=METRICS,
                     concurrency=2 * CONCURRENCY, warmup=warmup, duration=hold, rate=round(rate, 2), ts_base=base,
                     samples=samples_path)
    # Another key's sync requests beside the load: never shed, they wait for their verdict behind the backlog
    # of the raw topic only (their own partition's share of it).
    sync_base, _ = slots.take(requests=int(SYNC_RATE * (warmup + hold)) + 16)
    syncing = launch(bench.url, other_key, fleet.thing_ids[PROBES:PROBES + 4] or fleet.thing_ids, frames=1,
                     metrics=METRICS, concurrency=4, warmup=warmup, duration=hold, rate=SYNC_RATE,
                     ts_base=sync_base, sync=True)
    monitor.start(loadgen=process.pid)
    probe = _Probe(bench, fleet.metric_ids[0], fleet.thing_ids[:PROBES], base, end)
    counts: list[tuple[float, int]] = []
    result, expected, deadline, next_count = None, [], 0.0, 0.0
    while True:
        probe.poll()
        if time.time() >= next_count:
            counts.append(_visible(bench, base))
            next_count = time.time() + 1.0
        if result is None and process.poll() is not None:
            monitor.stop()
            result = collect(process, timeout=30)
            _within(result, end)
            expected = [s for s in _read_samples(samples_path) if s[0] in probe.things]
            deadline = time.time() + plan.drain_cap
        if result is not None and (time.time() > deadline or (
                all((t, ts) in probe.seen for t, ts, _ in expected) and _settled(counts))):
            break
        time.sleep(FRESH_POLL_S)
    synced = collect(syncing, timeout=60)
    bench.check_alive()
    start, stop = result["started_at"], result["ended_at"]
    goodput = (_count_at(counts, stop) - _count_at(counts, start)) / max(stop - start, 1e-9)
    now = time.time()
    ages = [probe.seen.get((thing, ts), now) - accepted for thing, ts, accepted in expected]
    shed = result["errors"].get("503", 0) / max(result["requests"], 1)
    tag, words = f"{multiple:g}x", f"{multiple:g}× drain"
    note = (f"offered {rate * VALUES:,.0f} values/s for {hold:.0f} s after a {warmup:.0f} s warm-up; "
            f"accepted {result['values_per_s']:,.0f}/s; errors {result['errors'] or 'none'}")
    fresh_note = f"{note}; {len(ages)} probe requests, poll every {FRESH_POLL_S * 1000:.0f} ms"
    rows = [
        Row(f"overload.goodput_ratio_{tag}", f"overload {words}: goodput ÷ drain", "×", Stat.of([goodput / drain]),
            target=TARGET_GOODPUT if multiple in (1.25, 2.0) else None,
            note=f"{goodput:,.0f} values/s queryable; {note}"),
        Row(f"overload.shed_share_{tag}", f"overload {words}: requests shed (503)", "×", Stat.of([shed]),
            lower_is_better=True, note=note),
        Row(f"overload.freshness_p50_ms_{tag}", f"overload {words}: freshness p50", "ms",
            Stat.of([percentile(ages, 50) * 1000]), lower_is_better=True, note=fresh_note),
        Row(f"overload.freshness_p99_ms_{tag}", f"overload {words}: freshness p99", "ms",
            Stat.of([percentile(ages, 99) * 1000]), lower_is_better=True,
            target=TARGET_FRESHNESS_P99_MS if multiple == 2.0 else None, note=fresh_note),
        Row(f"overload.sync_p99_ms_{tag}", f"overload {words}: another key's sync reply p99", "ms",
            Stat.of([synced["p99_ms"]]), lower_is_better=True,
            target=TARGET_SYNC_P99_MS if multiple == 2.0 else None,
            note=f"{SYNC_RATE} requests/s of 1 frame, Prefer: wait=5; {synced['ok']} of {synced['requests']} "
                 f"answered 200, p50 {synced['p50_ms']:.0f} ms" + (f", others {synced['errors']}"
                                                                  if synced["errors"] else "")),
    ]
    return rows, _spent(monitor.samples, counts, probe.query_at + [t for t, _ in counts], result)


def _settled(counts: list[tuple[float, int]]) -> bool:
    """Whether the visible count has not moved for SETTLED_S."""
    last_t, last = counts[-1]
    return any(t <= last_t - SETTLED_S for t, _ in counts) and all(
        c == last for t, c in counts if t >= last_t - SETTLED_S)
