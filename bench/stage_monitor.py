"""Which stage falls behind: a background sampler of the pipeline's backlog while a load runs.

Every `every` seconds it records, per stage, what a reader needs to see a lag grow:
- Kafka lag (end offset − committed offset, summed over partitions) of the raw topic in the
  processors' group and of the frames topic in the readings sink's group;
- the readings sink's insert time and rows so far (the edge's /metrics), hence its duty cycle;
- CPU seconds of every service (utime + stime of its process tree, from /proc), and of the
  edge's threads by name, and by kind of work (`bench.cpu_cost`: HTTP, the sinks' inserts,
  chDB's merges, other), which tells chDB's merges from its inserts and from Python;
- rarely (`parts_every`), the readings table's active parts and running merges: those
  queries go through the edge's admin SQL and take embedded chDB's one lock, as the sink does.

`wait_drained` blocks until both lags are zero (or a bound). Samples are plain dicts, kept
for results.json; `summary` condenses them for the log.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import httpx
import schemas
from bench import fixtures as fx
from bench.cpu_cost import ThreadCpu
from bench.stack_setup import BenchStack, cpu_seconds, descendants
from bus.lag import LagCollector

_SINK = "sink-readings"  # the readings sink's consumer-group suffix (sinks/warehouse_sinks.py)
_METRIC = re.compile(r'^(sluice_sink_insert_duration_seconds_(?:sum|count)|sluice_sink_rows_inserted_total)'
                     r'\{sink="' + _SINK + r'"\} (\S+)$', re.M)


class StageMonitor:
    """Start with `start()`, stop with `stop()`; `samples` grows meanwhile (one dict per tick)."""

    def __init__(self, bench: BenchStack, pids: dict[str, int], every: float = 5.0, parts_every: float = 30.0):
        self.bench, self.pids, self.every, self.parts_every = bench, dict(pids), every, parts_every
        prefix = bench.settings.topic_prefix
        topics = schemas.Topics(prefix)
        # (name, consumer group, topic): Faust's group is the app id; each sink's is prefix + its name.
        self.stages = (("raw", f"{prefix}processors", topics.raw), ("frames", f"{prefix}{_SINK}", topics.frames))
        self.samples: list[dict] = []
        self.base_pids = dict(pids)
        self._lag = LagCollector(bench.ctx.bootstrap, prefix, timeout=10.0)
        self._http = httpx.Client(base_url=bench.url, headers={"X-Api-Key": bench.key}, timeout=60)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._parts_at = 0.0
        self._edge_work = ThreadCpu()

    # -- lifecycle ----------------------------------------------------------

    def start(self, **extra_pids: int) -> "StageMonitor":
        """Sample from now on, also the CPU of `extra_pids` (e.g. the load client)."""
        self.pids.update(extra_pids)
        self.samples = []
        self._stop.clear()
        self._parts_at = 0.0
        self._edge_work = ThreadCpu()
        self._thread = threading.Thread(target=self._run, name="stage-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.pids = dict(self.base_pids)

    def close(self) -> None:
        self.stop()
        self._http.close()

    def _run(self) -> None:
        next_at = time.time()
        while not self._stop.is_set():
            try:
                self.samples.append(self.sample())
            except Exception as exc:  # a missed sample must not end the run it watches
                fx.log(f"stage monitor: sample failed: {exc}")
            next_at += self.every
            self._stop.wait(max(0.0, next_at - time.time()))

    # -- one sample -----------------------------------------------------------

    def sample(self) -> dict:
        """Blocks for a few broker round trips, a /metrics scrape and, when due, two chDB queries."""
        out: dict = {"t": time.time(), **self.lags()}
        out.update(self._sink())
        out["cpu_s"] = {name: round(_tree_cpu(pid), 2) for name, pid in self.pids.items()}
        threads = _threads(self.pids["edge"])
        out["edge_threads_cpu_s"] = _by_name(threads)
        out["edge_work_cpu_s"] = self._edge_work.add(threads)
        if out["t"] >= self._parts_at:
            self._parts_at = out["t"] + self.parts_every
            out.update(self._parts())
        return out

    def lags(self) -> dict[str, int]:
        """Stage name → messages in its topic its group has not committed yet (bus.lag, as the
        edge's /metrics reports it, summed over partitions)."""
        lag = self._lag.lag()
        return {f"{name}_lag": sum(n for (g, t, _), n in lag.items() if (g, t) == (group, topic))
                for name, group, topic in self.stages}

    def _sink(self) -> dict:
        try:
            text = self._http.get("/metrics").text
        except httpx.TransportError:  # a kept-alive connection the edge closed meanwhile: once more
            text = self._http.get("/metrics").text
        values = {name: float(value) for name, value in _METRIC.findall(text)}
        return {"insert_s": values.get("sluice_sink_insert_duration_seconds_sum", 0.0),
                "inserts": int(values.get("sluice_sink_insert_duration_seconds_count", 0)),
                "rows_inserted": int(values.get("sluice_sink_rows_inserted_total", 0))}

    def _parts(self) -> dict:
        db = self.bench.settings.database
        started = time.time()
        parts = self.bench.sql(f"SELECT count(), sum(rows) FROM system.parts "
                               f"WHERE database = '{db}' AND table = 'readings' AND active")
        merges = self.bench.sql(f"SELECT count(), sum(num_parts), sum(rows_read) FROM system.merges "
                                f"WHERE database = '{db}' AND table = 'readings'")
        return {"parts": int(parts[0][0]), "readings_rows": int(parts[0][1] or 0), "merges": int(merges[0][0]),
                "merging_parts": int(merges[0][1] or 0), "parts_query_s": round(time.time() - started, 3)}

    # -- after the load ---------------------------------------------------------

    def wait_drained(self, timeout: float) -> tuple[bool, float]:
        """(drained, seconds waited): blocks until raw and frames lag are both zero, or `timeout`."""
        started = time.time()
        while True:
            lags = self.lags()
            if not any(lags.values()):
                return True, time.time() - started
            if time.time() - started > timeout:
                fx.log(f"backlog not drained after {timeout:.0f} s: {lags}")
                return False, time.time() - started
            time.sleep(1.0)

    def summary(self, since: float = 0.0, until: float = float("inf")) -> list[str]:
        """Log lines: lag, sink duty cycle and parts per tick, then CPU shares over [since, until]."""
        kept = [s for s in self.samples if since <= s["t"] <= until]
        if len(kept) < 2:
            return []
        lines = []
        for a, b in zip(kept, kept[1:]):
            span = b["t"] - a["t"]
            duty = (b["insert_s"] - a["insert_s"]) / span
            rows = (b["rows_inserted"] - a["rows_inserted"]) / span
            parts = (f"; parts {b['parts']} ({b['merges']} merging, query {b['parts_query_s']:.2f} s)"
                     if "parts" in b else "")
            lines.append(f"+{b['t'] - kept[0]['t']:4.0f} s lag raw {b['raw_lag']:6,} frames {b['frames_lag']:6,}; "
                         f"sink {rows:9,.0f} rows/s, inserting {duty:4.0%} of the time{parts}")
        return lines + [f"CPU (cores): {_shares(kept, 'cpu_s', 99)}",
                        f"edge threads (cores): {_shares(kept, 'edge_threads_cpu_s', 8)}",
                        f"edge work (cores): {_shares(kept, 'edge_work_cpu_s', 4)}"]


def _shares(samples: list[dict], field: str, top: int) -> str:
    """Cores used per name between the first and last sample (a process that ended: until its last live sample)."""
    span = samples[-1]["t"] - samples[0]["t"]
    first = samples[0][field]
    names = {name for s in samples for name in s[field]}
    used = {name: (max(s[field].get(name, 0.0) for s in samples) - first.get(name, 0.0)) / span for name in names}
    return ", ".join(f"{name} {share:.2f}" for name, share in sorted(used.items(), key=lambda i: -i[1])[:top])


def _tree_cpu(pid: int) -> float:
    """CPU seconds of `pid` and its children that are still running (a process's own total includes its threads)."""
    total = 0.0
    for member in descendants(pid):
        try:
            total += cpu_seconds(Path(f"/proc/{member}/stat").read_text())
        except (OSError, IndexError, ValueError):
            continue
    return total


def _threads(pid: int) -> dict[int, tuple[str, float]]:
    """Thread id → (its OS name, its CPU seconds) for `pid`'s live threads."""
    out: dict[int, tuple[str, float]] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        out[int(task.name)] = (stat[stat.index("(") + 1:stat.rindex(")")], cpu_seconds(stat))
    return out


def _by_name(threads: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds summed by thread name (digits dropped: pools number their threads)."""
    out: dict[str, float] = {}
    for name, cpu in threads.values():
        name = re.sub(r"\d+$", "", name) or "?"
        out[name] = round(out.get(name, 0.0) + cpu, 2)
    return out
