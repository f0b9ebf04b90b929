"""The admission rule alone, without services: a stage's backlog in seconds of drain (bus.drain),
the stage furthest behind (bus.backlog_watch), and whom the edge sheds (producers.edge.admission)."""

from __future__ import annotations

import random

from bus.backlog_watch import Backlog, worst
from bus.drain import Drain, DrainEstimate, Sample
from producers.edge.admission import Admission, KeyShares, retry_after


def feed(estimate: DrainEstimate, samples: list[tuple[float, int, int]]) -> Drain:
    drain = Drain(0, 0.0, 0.0)
    for at, resumes_at, high in samples:
        drain = estimate.add(Sample(at, resumes_at, high))
    return drain


def test_a_draining_stage_counts_its_backlog_in_seconds_of_its_drain_rate():
    # 1000 messages a second drained, 5000 waiting: 5 s of drain.
    drain = feed(DrainEstimate(), [(t, 1000 * t, 1000 * t + 5000) for t in range(6)])
    assert drain.backlog == 5000
    assert drain.rate == 1000
    assert drain.seconds == 5.0


def test_an_idle_stage_meeting_a_burst_is_not_judged_by_its_idle_seconds():
    # Idle for 8 s (nothing waiting), then 3000 messages arrive: no drain measured yet, so not 3000 s behind.
    samples = [(t, 100, 100) for t in range(8)] + [(8, 100, 3100)]
    drain = feed(DrainEstimate(), samples)
    assert drain.backlog == 3000
    assert drain.seconds <= 1.0
    # Once it drains 1500 in the next second, its rate is that second's, not the idle window's.
    drain = feed(DrainEstimate(), samples + [(9, 1600, 3100)])
    assert drain.rate == 1500
    assert drain.seconds == 1.0


def test_a_stage_that_drains_nothing_counts_the_seconds_since_it_last_moved():
    estimate = DrainEstimate()
    feed(estimate, [(0, 0, 0), (1, 0, 10)])
    drain = feed(estimate, [(t, 0, 10 + t) for t in range(2, 31)])
    assert drain.rate == 0
    assert drain.seconds == 30 - 0  # it last moved (nothing waiting) at 0
    # It moves again: the clock restarts, and its rate is what it drained while work waited.
    drain = estimate.add(Sample(31, 40, 41))
    assert drain.seconds < 2


def test_a_stage_stopped_after_draining_climbs_past_any_bound():
    estimate = DrainEstimate()
    feed(estimate, [(t, 100 * t, 100 * t + 100) for t in range(10)])
    # Stopped at 9 (its last commit) while requests keep coming: never less than the time since.
    for t in range(10, 60):
        assert estimate.add(Sample(t, 900, 900 + 100 * t)).seconds >= t - 9


def test_the_view_is_the_stage_furthest_behind():
    stages = {"p.processors": Drain(10, 100.0, 0.1), "p.sink-readings": Drain(900, 100.0, 9.0),
              "p.sink-rejects": Drain(0, 0.0, 0.0)}
    assert worst(stages, 5.0) == Backlog("p.sink-readings", stages["p.sink-readings"], 5.0)
    assert worst({}, 5.0).seconds == 0


def behind(seconds: float) -> Backlog:
    return Backlog("p.processors", Drain(1000, 100.0, seconds), 0.0)


def test_under_the_bound_or_without_a_view_everything_is_admitted():
    admission = Admission(10.0)
    admission.accepted("heavy", 10_000, 0.0)
    assert admission.decide("heavy", behind(10.0), 1.0) is None
    assert admission.decide("heavy", None, 1.0) is None  # no fresh view (the broker away): admit
    assert Admission(0).decide("heavy", behind(1000.0), 1.0) is None  # 0 turns it off


def test_over_the_bound_the_key_above_its_fair_share_is_shed_and_the_lighter_one_admitted():
    admission = Admission(10.0)
    for n in range(5):
        admission.accepted("heavy" if n % 5 else "light", 1000, n * 0.01)
    shed = admission.decide("heavy", behind(15.0), 0.1)
    assert shed is not None and shed.reason == "heavy_key" and shed.retry_after == 5
    assert admission.decide("light", behind(15.0), 0.1) is None
    assert admission.decide("new key", behind(15.0), 0.1) is None
    # One key alone holds the whole share: over the bound it is shed.
    alone = Admission(10.0)
    alone.accepted("only", 1000, 0.0)
    assert alone.decide("only", behind(11.0), 0.1) is not None


def test_past_twice_the_bound_every_async_request_is_shed():
    admission = Admission(10.0)
    admission.accepted("heavy", 100_000, 0.0)
    admission.accepted("light", 10, 0.0)
    for key in ("heavy", "light", "new key"):
        shed = admission.decide(key, behind(21.0), 0.1)
        assert shed is not None and shed.reason == "backlog" and shed.retry_after == 11


def test_retry_after_is_the_time_back_to_the_bound_within_one_and_sixty_seconds():
    assert retry_after(10.2, 10.0) == 1
    assert retry_after(17.5, 10.0) == 8
    assert retry_after(float("inf"), 10.0) == 60
    assert retry_after(10_000, 10.0) == 60


def test_shares_decay_and_silent_keys_stop_counting_among_the_senders():
    shares = KeyShares(half_life_s=5.0)
    shares.add("a", 1000, 0.0)
    shares.add("b", 1000, 5.0)  # a's 1000 weigh 500 by now
    share, senders = shares.share("b", 5.0)
    assert abs(share - 1000 / 1500) < 1e-9 and senders == 2
    shares.add("b", 1, 26.0)  # a silent for 26 s (over 4 half-lives) is swept
    assert shares.share("a", 26.0) == (0.0, 1)


def offered_and_accepted(rule) -> tuple[int, int]:
    """Two keys offering 4:1 requests of the same size, 5000 of them over 50 s, the pipeline held
    over the bound; `rule(key, now)` says whether to admit. Returns what each key got accepted."""
    pattern = ["heavy"] * 4 + ["light"]
    got = {"heavy": 0, "light": 0}
    for n in range(5000):
        key, now = pattern[n % 5], n * 0.01
        if rule(key, now):
            got[key] += 1
    return got["heavy"], got["light"]


def test_with_two_keys_offering_four_to_one_the_light_key_keeps_its_share():
    admission = Admission(10.0)

    def fair(key: str, now: float) -> bool:
        if admission.decide(key, behind(15.0), now) is not None:
            return False
        admission.accepted(key, 1000, now)
        return True

    heavy, light = offered_and_accepted(fair)
    assert light == 1000  # every request of the light key
    assert light / (heavy + light) > 0.45  # the heavy one gets about as much, not more
    # Random shedding of the same volume leaves the light key its offered fifth.
    chance = random.Random(25)
    heavy, light = offered_and_accepted(lambda key, now: chance.random() < 0.4)
    assert light / (heavy + light) < 0.25
