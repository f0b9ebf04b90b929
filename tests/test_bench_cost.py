"""The arithmetic behind the bench's cost of a million values (bench.cpu_cost): pure, no service."""

from __future__ import annotations

import pytest

from bench.common import Row, Stat
from bench.cpu_cost import KEY, ThreadCpu, cost_rows, dominant, per_million, request_costs, results_entry, work_of
from bench.report import goals


@pytest.mark.parametrize("thread, work", [
    ("python", "http"),
    ("sink-readings", "inserts"), ("sink-ingest-log", "inserts"),
    ("QueryCompPipeEx", "inserts"), ("QueryPipelineEx", "inserts"), ("ThreadPool", "inserts"),
    ("MergeMutate", "merges"), ("BgSchPool", "merges"), ("BgMBSchPool", "merges"), ("Move", "merges"),
    ("rdk:broker1", "other"), ("rdk:main", "other"), ("jemalloc_bg_thd", "other"), ("MemoryWorker", "other"),
])
def test_threads_are_sorted_by_the_work_their_os_name_says(thread, work):
    assert work_of(thread) == work


def test_a_pool_thread_counts_for_the_name_it_had_in_each_interval():
    cpu = ThreadCpu()
    assert cpu.add({1: ("python", 5.0), 2: ("ThreadPool", 7.0)}) == {
        "http": 0, "inserts": 0, "merges": 0, "other": 0}  # the first sample is the baseline
    # Thread 2 ran a merge meanwhile; thread 3 was born and used 0.5 s; thread 1 used 1 s.
    cpu.add({1: ("python", 6.0), 2: ("MergeMutate", 9.0), 3: ("rdk:main", 0.5)})
    # Thread 2 is back in the global pool (2 s more); thread 3 ended (its last interval is lost).
    totals = cpu.add({1: ("python", 6.0), 2: ("ThreadPool", 11.0)})
    assert totals == {"http": 1.0, "inserts": 2.0, "merges": 2.0, "other": 0.5}


def _sample(t, edge, processor, broker, client, http, inserts, merges, other):
    return {"t": t, "cpu_s": {"edge": edge, "processor1": processor, "broker": broker, "loadgen": client},
            "edge_work_cpu_s": {"http": http, "inserts": inserts, "merges": merges, "other": other}}


def test_cpu_seconds_per_million_values_per_process_and_end_to_end():
    samples = [_sample(0, 10, 5, 3, 1, 4, 3, 2, 1),
               _sample(5, 11, 5.5, 3.2, 1.3, 4.2, 3.5, 2.2, 1.1),
               _sample(10, 12, 6, 3.5, 1.4, 4.5, 4, 2.3, 1.2)]
    cost = per_million(samples, values=2_000_000)
    assert cost == pytest.approx({"edge": 1.0, "edge_http": 0.25, "edge_inserts": 0.5, "edge_merges": 0.15,
                                  "edge_other": 0.1, "processor": 0.5, "broker": 0.25, "loadgen": 0.2,
                                  "end_to_end": 1.75})  # edge + processor + broker, not the client
    assert dominant(cost) == ("sinks and merges", pytest.approx(0.65))  # inserts and merges: one stage


def test_numbered_instances_are_one_process_and_an_ended_one_counts_until_its_last_sample():
    first = {"t": 0, "cpu_s": {"edge": 1, "processor1": 1, "processor2": 2, "loadgen": 1}}
    middle = {"t": 5, "cpu_s": {"edge": 2, "processor1": 2, "processor2": 3, "loadgen": 3}}
    last = {"t": 10, "cpu_s": {"edge": 3, "processor1": 3, "processor2": 4, "loadgen": 0}}  # the client exited
    cost = per_million([first, middle, last], values=1_000_000)
    assert cost == pytest.approx({"edge": 2, "processor": 4, "loadgen": 2, "end_to_end": 6})
    assert dominant(cost) == ("processor", 4)  # no split of the edge: the edge is one stage


def test_no_figure_without_two_samples_or_values():
    one = _sample(0, 1, 1, 1, 1, 1, 1, 1, 1)
    assert per_million([one], values=1e6) == {}
    assert per_million([one, one], values=0) == {}


def test_cost_rows_carry_the_target_and_land_in_results_json():
    cost = {"edge_http": 0.4, "edge_inserts": 1.2, "edge": 2.0, "processor": 0.9, "end_to_end": 3.5}
    rows = cost_rows("overload", "overload 1×", cost, "a note")
    end_to_end = next(r for r in rows if r.key == f"overload.{KEY}.end_to_end")
    assert end_to_end.target == 3.0 and end_to_end.lower_is_better
    assert "dominated by sinks and merges (1.20 of 3.50)" in end_to_end.note
    assert all(r.target is None for r in rows if r is not end_to_end)
    assert goals(end_to_end, {}) == [("≤ 3", False)]
    other = Row("overload.goodput_ratio_1x", "goodput", "×", Stat.of([1.0]))
    assert results_entry([other, *rows]) == cost
    assert results_entry([other]) is None


def test_a_shed_request_and_an_accepted_one_are_told_apart_by_least_squares():
    accepted, shed = 2e-3, 0.25e-3  # CPU-seconds each
    loads = [(accepted * a + shed * s, a, s) for a, s in ((300, 0), (370, 0), (400, 100), (420, 600))]
    assert request_costs(loads) == pytest.approx((accepted, shed))
    assert request_costs([(0.6, 300, 0), (0.74, 370, 0)]) is None  # nothing shed: no figure for it


def test_goodput_is_also_taken_against_the_highest_flat_rate():
    from bench.overload import _against_flat

    rows = [Row("overload.goodput_ratio_2x", "overload at 2×: goodput ÷ drain", "×", Stat.of([0.64]), target=0.9),
            Row("overload.shed_share_2x", "overload at 2×: requests shed (503)", "×", Stat.of([0.63]))]
    [row] = _against_flat(rows, drain=441_000, flat=304_000)
    assert row.key == "overload.goodput_vs_flat_2x" and row.target == 0.9
    assert row.stat.median == pytest.approx(0.64 * 441_000 / 304_000)
    assert _against_flat(rows, drain=441_000, flat=0.0) == []  # no rate held: nothing to divide by
