"""A Sluice stack for one benchmark stage, and the catalog its load needs.

`BenchStack` starts edge and processor (and, with CLICKHOUSE_URL, the sink) on the
run's broker with their own topic prefix, database, state folder and port, the rate
limit off and 4 partitions; it can add processor and sink instances and stop them all.
`register` creates one thing type of 10 Double metrics (m0…m9) and K things over HTTP.
`memory` reads a process tree's resident memory from /proc.

Starting blocks until every service is ready (seconds; a cold broker client or chDB
takes longest); registering blocks for one HTTP round trip per entity.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.common import Context, free_port
from config import Settings
from sluice.stack import Stack, die_with_parent, terminate

METRICS = 10
REBALANCE_S = 4.0  # a new Faust worker is "ready" before the group has settled its partitions


@dataclasses.dataclass(frozen=True)
class Fleet:
    """What `register` created: metric ids in m0… order, and the things."""

    metric_ids: list[str]
    thing_ids: list[str]


class BenchStack:
    def __init__(self, ctx: Context, name: str, **overrides: object) -> None:
        """`overrides`: further settings (e.g. schema_registry_url) for every service of the stack."""
        token = secrets.token_hex(3)
        self.ctx = ctx
        settings = Settings.from_env(
            kafka_bootstrap=ctx.bootstrap, topic_prefix=f"bench{token}.",
            state_dir=Path(ctx.scratch) / f"{name}-{token}", database=f"sluice_bench_{token}",
            http_port=free_port(), admin_key="", rate_limit=0, partitions=4, **overrides)
        self.stack = Stack(settings)
        self.extra: dict[str, subprocess.Popen] = {}  # "processor2", "sink2", … → process
        self.client: httpx.Client | None = None

    # -- lifecycle ----------------------------------------------------------

    def __enter__(self) -> "BenchStack":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self.stack.start()
        self.client = httpx.Client(base_url=self.url, headers={"X-Api-Key": self.key}, timeout=60)

    def stop(self) -> None:
        """Extra instances first, then the stack (edge last drains, as `sluice up` does); idempotent."""
        for process in self.extra.values():
            terminate(process)
        self.extra.clear()
        if self.client is not None:
            self.client.close()
            self.client = None
        self.stack.stop()

    @property
    def settings(self) -> Settings:
        return self.stack.settings  # after start: the admin key filled in

    @property
    def url(self) -> str:
        return self.stack.url

    @property
    def key(self) -> str:
        return self.settings.admin_key

    @property
    def embedded(self) -> bool:
        return self.settings.embedded_warehouse

    def count(self, service: str) -> int:
        return sum(1 for name in self.pids() if name.rstrip("0123456789") == service)

    def add(self, service: str) -> str:
        """Start one more `processor` or `sink` instance; blocks until it has joined its group."""
        name = f"{service}{self.count(service) + 1}"
        # Its own state folder: its own ready file (and Faust data dir) next to the first one's.
        state_dir = self.settings.state_dir / name
        ready = state_dir / "run" / "processor.ready"
        state_dir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level of its data dir
        env = {**os.environ, **self.settings.to_env(), "SLUICE_STATE_DIR": str(state_dir)}
        log = self.settings.state_dir / "logs" / f"{name}.log"
        with open(log, "ab") as out:
            self.extra[name] = subprocess.Popen(
                [sys.executable, "-m", "sluice.cli", service], env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent)
        deadline = time.monotonic() + 120
        while service == "processor" and not ready.exists():
            if self.extra[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; see {log}")
            time.sleep(0.2)
        time.sleep(REBALANCE_S)
        return name

    def stop_service(self, name: str) -> None:
        """Stop one service of the stack itself (e.g. the processor, to measure the edge alone)."""
        child = next(c for c in self.stack.children if c.name == name)
        terminate(child.process)
        self.stack.children.remove(child)

    def check_alive(self) -> None:
        self.stack.check_alive()
        for name, process in self.extra.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with code {process.returncode}")

    def pids(self) -> dict[str, int]:
        """Service name → pid: edge, processor1…, sink1… and the broker if this run started it."""
        out: dict[str, int] = {}
        for child in self.stack.children:
            out[child.name if child.name.startswith("edge") else f"{child.name}1"] = child.process.pid
        out.update({name: process.pid for name, process in self.extra.items()})
        broker = broker_pid(self.ctx)
        if broker:
            out["broker"] = broker
        return out

    # -- HTTP ---------------------------------------------------------------

    def sql(self, query: str) -> list[list]:
        """Rows of a read-only query through the edge's admin endpoint (chDB lives in the edge)."""
        reply = self.client.post("/v2/admin/sql", json={"sql": query})
        reply.raise_for_status()
        return reply.json()["rows"]

    def register(self, things: int) -> Fleet:
        """One thing type with Double metrics m0…m9, one site and `things` things in it."""
        metric_ids = [self._create("/v2/definitions/metrics", {
            "name": f"m{i}", "dataType": "Double", "defaultAggregation": "Last"}) for i in range(METRICS)]
        type_id = self._create("/v2/definitions/thing-types", {"displayName": "Bench", "metricIds": metric_ids})
        site = self._create("/v2/sites", {"name": "Bench site"})
        thing_ids = [self._create(f"/v2/sites/{site}/things", {"thingName": f"bench-{i}", "thingTypeId": type_id})
                     for i in range(things)]
        return Fleet(metric_ids, thing_ids)

    def _create(self, path: str, body: dict) -> str:
        reply = self.client.post(path, json=body)
        if reply.status_code != 201:
            raise RuntimeError(f"POST {path} answered {reply.status_code}: {reply.text}")
        return reply.json()["id"]


def broker_pid(ctx: Context) -> int | None:
    """The broker JVM the harness started (its command line names the run's scratch folder)."""
    scratch = str(ctx.scratch).encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"kafka.Kafka" in cmdline and scratch in cmdline:
                return int(entry.name)
    return None


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        tree.extend(frontier)
    return tree


def cpu_seconds(stat: str) -> float:
    """User + system CPU seconds in the text of a /proc/<pid>/stat or /proc/<pid>/task/<tid>/stat."""
    fields = stat.rsplit(")", 1)[1].split()  # after the name, which may hold spaces and parentheses
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def memory(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) in MiB of `pid` and its descendants (VmRSS, VmHWM); (0, 0) if gone."""
    rss = peak = 0
    for member in descendants(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        rss += int(fields.get("VmRSS", "0 kB").split()[0])
        peak += int(fields.get("VmHWM", "0 kB").split()[0])
    return rss / 1024, peak / 1024
