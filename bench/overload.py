"""Overload as users meet it: the end-to-end pipeline offered 1×, 1.25×, 1.5× and 2× what it drains.

One stack as end_to_end's (edge with the embedded chDB sink, processor), shedding at the
default `SLUICE_ADMIT_BACKLOG_S`; its drain measured as end_to_end measures it (a burst
worked off). Then, for each multiple, `bench.loadgen` paced at that multiple of the drain
for a warm-up and `hold` seconds, and for the measured part:
- goodput: values becoming queryable per second (count() over the load's event-time slot,
  polled every second through the edge's admin SQL) ÷ the same run's drain;
- shed share: the requests answered 503 ÷ all sent;
- freshness p50/p99: for requests to a few probe things, the client's 202 → the first poll
  (every 50 ms) that finds the request's first row.
After each load the bench waits until its rows stop arriving, so the next starts drained.

Then the highest offered rate whose lags stay flat for a minute, found by bisection between
0.5× and 2× the drain (4 steps; 2 of 10 s with --quick): a rate holds when nothing is shed
and the lag of the processors (raw) and of the readings sink (frames), summed, grew by less
than two seconds' worth of the offered requests from the first to the last 10 s of the
minute. Each step starts drained.
Blocks for about 11 minutes (about 2 with --quick).
"""

from __future__ import annotations

import time

from bench.common import Context, Row, Stat
from bench.end_to_end import (CONCURRENCY, FRAMES, FRESH_POLL_S, METRICS, PROBES, VALUES, Plan, Slots, _count_at,
                              _drain, _Probe, _read_samples, _visible, _within)
from bench.loadgen import collect, launch, percentile
from bench.stack_setup import BenchStack, Fleet
from bench.stage_monitor import StageMonitor

MULTIPLES = (1.0, 1.25, 1.5, 2.0)
TARGET_GOODPUT = 0.9  # × drain, at 1.25× and 2× (issue 25)
TARGET_FRESHNESS_P99_MS = 2000  # under 2× overload
SETTLED_S = 3.0  # a load's rows have all arrived when the count stood still this long
LAG_EVERY_S = 2.0


def run(ctx: Context) -> list[Row]:
    plan = Plan.of(ctx)
    warmup, hold = (2.0, 6.0) if ctx.quick else (10.0, 40.0)
    slots = Slots()
    with BenchStack(ctx, "overload") as bench:
        fleet = bench.register(things=plan.things)
        drain = _drain(bench, fleet, slots, plan)
        rows = [Row("overload.drain_values_per_s", "overload: pipeline drain values/s", "values/s",
                    Stat.of([drain]), note="a burst accepted at full speed, its start → 90 % of it visible; "
                                           "what the multiples below are of")]
        for multiple in MULTIPLES:
            rows += _offer(bench, fleet, slots, plan, multiple, drain, warmup, hold)
        minute, steps = (10.0, 2) if ctx.quick else (60.0, 4)
        flat, tried = _highest_flat(bench, fleet, slots, plan, drain, minute, steps)
        rows.append(Row("overload.flat_values_per_s", f"overload: highest rate with flat lags for {minute:.0f} s",
                        "values/s", Stat.of([flat]), baseline="overload.drain_values_per_s",
                        note=f"bisection between 0.5× and 2× drain: {'; '.join(tried)}"))
        bench.check_alive()
    return rows


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


def _offer(bench: BenchStack, fleet: Fleet, slots: Slots, plan: Plan, multiple: float, drain: float,
           warmup: float, hold: float) -> list[Row]:
    rate = multiple * drain / VALUES  # requests/s
    base, end = slots.take(requests=int(rate * (warmup + hold)) + 4 * CONCURRENCY)
    samples_path = bench.settings.state_dir / f"overload-{base}.csv"
    process = launch(bench.url, bench.key, fleet.thing_ids, frames=FRAMES, metrics=METRICS,
                     concurrency=2 * CONCURRENCY, warmup=warmup, duration=hold, rate=round(rate, 2), ts_base=base,
                     samples=samples_path)
    probe = _Probe(bench, fleet.metric_ids[0], fleet.thing_ids[:PROBES], base, end)
    counts: list[tuple[float, int]] = []
    result, expected, deadline, next_count = None, [], 0.0, 0.0
    while True:
        probe.poll()
        if time.time() >= next_count:
            counts.append(_visible(bench, base))
            next_count = time.time() + 1.0
        if result is None and process.poll() is not None:
            result = collect(process, timeout=30)
            _within(result, end)
            expected = [s for s in _read_samples(samples_path) if s[0] in probe.things]
            deadline = time.time() + plan.drain_cap
        if result is not None and (time.time() > deadline or (
                all((t, ts) in probe.seen for t, ts, _ in expected) and _settled(counts))):
            break
        time.sleep(FRESH_POLL_S)
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
    return [
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
    ]


def _settled(counts: list[tuple[float, int]]) -> bool:
    """Whether the visible count has not moved for SETTLED_S."""
    last_t, last = counts[-1]
    return any(t <= last_t - SETTLED_S for t, _ in counts) and all(
        c == last for t, c in counts if t >= last_t - SETTLED_S)
