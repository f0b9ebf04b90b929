"""What a million values cost: CPU-seconds of every process per million values landed.

The edge (with embedded chDB) is one process doing three kinds of work, told apart by what
the OS calls its threads (/proc/<pid>/task/<tid>/comm):
- http: uvicorn's event loop and the threads it hands work to, and the edge's other Python
  threads; CPython leaves them all "python";
- inserts: the embedded sinks' threads (their consumer loops and arroyo's insert threads, named
  after the sink: `sink-readings`, …) and the chDB query threads that run the INSERT … SELECT
  (`QueryCompPipeEx`, `QueryPipelineEx`, the global pool's `ThreadPool`); these also serve any
  SELECT the edge runs, the bench's polls included;
- merges: chDB's background executors (`MergeMutate`, `Move`, `Fetch`, `Common`) and its
  schedule pools (`BgSchPool`, `BgMBSchPool`, …);
- other: the rest (librdkafka's `rdk:*` threads, which compress and send the produced raw
  messages and fetch the sinks' frames; the allocator's housekeeping).
A pool thread takes the name of the job it runs, so a thread's CPU is attributed interval by
interval to its name at the interval's end (`ThreadCpu`), not once to its last name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bench.common import Row, Stat

KEY = "cpu_s_per_million"  # row keys: f"{stage}.{KEY}.{process}"; results.json's cpu_seconds_per_million_values
TARGET_END_TO_END = 3.0  # CPU-seconds per million values, everything but the load client (issue 25)
EDGE_WORK = ("http", "inserts", "merges", "other")
_INSERT_THREADS = frozenset({"QueryCompPipeEx", "QueryPipelineEx", "QueryPullPipeEx", "ThreadPool"})
_MERGE_THREADS = frozenset({"MergeMutate", "Move", "Fetch", "Common"})
CLIENT = "loadgen"  # the load client's name among the sampled processes: not part of the pipeline's cost


def work_of(thread: str) -> str:
    """The kind of edge work a thread of this OS name does (one of EDGE_WORK)."""
    if thread == "python":
        return "http"
    if thread.startswith("sink-") or thread in _INSERT_THREADS:
        return "inserts"
    if thread in _MERGE_THREADS or (thread.startswith("Bg") and thread.endswith("Pool")):
        return "merges"
    return "other"


class ThreadCpu:
    """CPU-seconds of a process's threads, summed by kind of work since the first `add`.

    Each call hands every live thread's (OS name, CPU-seconds so far); what a thread used since
    the previous call counts for the kind its name says now. A thread that appeared meanwhile
    counts whole; one that ended meanwhile loses what it used since the previous call.
    """

    def __init__(self) -> None:
        self._seen: dict[int, float] | None = None  # thread id → its CPU-seconds at the previous call
        self.totals: dict[str, float] = dict.fromkeys(EDGE_WORK, 0.0)

    def add(self, threads: Mapping[int, tuple[str, float]]) -> dict[str, float]:
        """The totals after this sample (a copy, rounded to 10 ms)."""
        if self._seen is not None:
            for tid, (name, cpu) in threads.items():
                self.totals[work_of(name)] += max(0.0, cpu - self._seen.get(tid, 0.0))
        self._seen = {tid: cpu for tid, (_, cpu) in threads.items()}
        return {work: round(cpu, 2) for work, cpu in self.totals.items()}


def per_million(samples: Sequence[Mapping], values: float) -> dict[str, float]:
    """Process → CPU-seconds per million `values` landed between the first and last sample.

    Samples are the stage monitor's: `cpu_s` (process name → CPU-seconds so far; numbered
    instances such as processor1, processor2 are summed as one process) and `edge_work_cpu_s`
    (kind of edge work → CPU-seconds so far), which adds `edge_http`, `edge_inserts`, … .
    `end_to_end` is every process but the load client. A process that ended counts until its
    last live sample. Empty when there are fewer than two samples or no values.
    """
    if len(samples) < 2 or values <= 0:
        return {}
    used: dict[str, float] = {}
    for field, prefix in (("cpu_s", ""), ("edge_work_cpu_s", "edge_")):
        for name in {name for s in samples for name in s.get(field, {})}:
            spent = max(s[field].get(name, 0.0) for s in samples) - samples[0][field].get(name, 0.0)
            key = prefix + name.rstrip("0123456789")
            used[key] = used.get(key, 0.0) + max(0.0, spent)
    order = list(LABELS)  # as the table lists them; a process without a label last
    out = {"end_to_end": sum(cpu for name, cpu in used.items() if name != CLIENT and not name.startswith("edge_"))}
    out.update(sorted(used.items(), key=lambda item: (order.index(item[0]) if item[0] in order else len(order),
                                                      item[0])))
    return {name: cpu / values * 1e6 for name, cpu in out.items()}


def dominant(cost: Mapping[str, float]) -> tuple[str, float]:
    """(stage, cost) of the stage that costs most per value, the load client left out. Measured by
    kind of work, the edge is two stages: its HTTP work, and the sinks with chDB's merges (what moves
    to the ClickHouse servers with a server); its other threads serve both and count for neither."""
    if "edge_http" in cost:
        stages = {"edge HTTP": cost["edge_http"],
                  "sinks and merges": cost.get("edge_inserts", 0.0) + cost.get("edge_merges", 0.0)}
    else:
        stages = {"edge": cost["edge"]} if "edge" in cost else {}
    stages.update({name: c for name, c in cost.items()
                   if name not in (CLIENT, "end_to_end", "edge") and not name.startswith("edge_")})
    return max(stages.items(), key=lambda item: item[1]) if stages else ("", 0.0)


LABELS = {  # what each process is, as the table says it, in its order
    "end_to_end": "end to end",
    "edge": "edge, whole process",
    "edge_http": "edge HTTP/Python",
    "edge_inserts": "edge sinks + inserts",
    "edge_merges": "edge chDB merges",
    "edge_other": "edge other threads",
    "processor": "processor",
    "broker": "Kafka broker",
    "integrations": "integrations stage",
    CLIENT: "load client",
}


def cost_rows(stage: str, label: str, cost: Mapping[str, float], note: str) -> list[Row]:
    """One row per process (and kind of edge work), CPU-seconds per million values, lower is better;
    the end-to-end row carries the issue's target and names the stage that dominates. `label`
    starts each row's label (e.g. which load it is)."""
    rows = []
    for name, value in cost.items():
        extra = ""
        if name == "end_to_end":
            top, top_cost = dominant(cost)
            extra = f"; all but the load client; dominated by {top} ({top_cost:.2f} of {value:.2f})"
        rows.append(Row(f"{stage}.{KEY}.{name}", f"{label}: CPU-s/M values, {LABELS.get(name, name)}",
                        "CPU-s per million values", Stat.of([value]), lower_is_better=True,
                        target=TARGET_END_TO_END if name == "end_to_end" else None, note=note + extra))
    return rows


def results_entry(rows: Sequence[Row]) -> dict[str, float] | None:
    """results.json's `cpu_seconds_per_million_values`: process (and kind of edge work) → the figure,
    with "end_to_end"; None when the run measured none."""
    marker = f".{KEY}."
    return {row.key.split(marker, 1)[1]: row.stat.median for row in rows if marker in row.key} or None


def request_costs(loads: Sequence[tuple[float, float, float]]) -> tuple[float, float] | None:
    """(CPU-seconds per accepted request, per shed request) fitted by least squares to loads of
    (CPU-seconds/s, accepted requests/s, shed requests/s); None when the loads cannot tell the
    two apart (e.g. nothing was shed in any of them)."""
    saa = sum(a * a for _, a, _ in loads)
    sss = sum(s * s for _, _, s in loads)
    sas = sum(a * s for _, a, s in loads)
    sca = sum(c * a for c, a, _ in loads)
    scs = sum(c * s for c, _, s in loads)
    det = saa * sss - sas * sas
    if not sss or abs(det) < 1e-9 * saa * sss:
        return None
    return (sca * sss - scs * sas) / det, (scs * saa - sca * sas) / det
