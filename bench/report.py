"""The report: a printed table with ratios, and bench/results.json."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

from bench.common import Row
from bench.cpu_cost import results_entry

VERSIONS = ("confluent-kafka", "faust-streaming", "aiokafka", "fastavro", "chdb", "clickhouse-connect",
            "fastapi", "uvicorn")


def machine() -> dict:
    memory_kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[:1]
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kb / 1024 / 1024, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "java": java[0] if java else "",
        "packages": {name: _version(name) for name in VERSIONS},
    }


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def ratios(row: Row, by_key: dict[str, Row]) -> list[str]:
    out = []
    if row.baseline and row.baseline in by_key:
        base = by_key[row.baseline].stat.median
        if base:
            out.append(f"{row.stat.median / base:.2f}× {by_key[row.baseline].label}")
    if row.target:
        ratio = row.target / row.stat.median if row.lower_is_better else row.stat.median / row.target
        if row.lower_is_better and not row.stat.median:
            ratio = float("inf")
        out.append(f"{ratio:.2f}× target {_fmt(row.target)}")
    return out


def goals(row: Row, by_key: dict[str, Row]) -> list[tuple[str, bool | None]]:
    """The row's goals in words, each with whether it is met (None: its baseline is not in this run)."""
    out: list[tuple[str, bool | None]] = []
    if row.target is not None:
        value = row.stat.median
        met = value <= row.target if row.lower_is_better else value >= row.target
        target = f"{row.target:,.0f}" if row.target >= 100 else f"{row.target:g}"  # 500,000 / 1.1 / 20
        out.append((f"{'≤' if row.lower_is_better else '≥'} {target}", met))
    if row.baseline_target is not None:
        base = by_key.get(row.baseline or "")
        met = row.stat.median >= row.baseline_target * base.stat.median if base and base.stat.median else None
        out.append((f"≥ {row.baseline_target:g}× baseline", met))
    return out


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "NOT met", None: "no baseline"}[met]


def table(rows: list[Row]) -> str:
    by_key = {r.key: r for r in rows}
    lines = [f"{'figure':<58} {'median':>12} {'min':>12} {'max':>12}  {'target':<46} unit / ratios"]
    for row in rows:
        extra = "; ".join([row.unit, *ratios(row, by_key)] + ([row.note] if row.note else []))
        target = "; ".join(f"{goal}: {_verdict(met)}" for goal, met in goals(row, by_key))
        lines.append(f"{row.label:<58} {_fmt(row.stat.median):>12} {_fmt(row.stat.low):>12} "
                     f"{_fmt(row.stat.high):>12}  {target:<46} {extra}")
    return "\n".join(lines)


def write_json(rows: list[Row], path: Path, parameters: dict) -> dict:
    by_key = {r.key: r for r in rows}
    document = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "parameters": parameters,
        "figures": {r.key: {"label": r.label, "unit": r.unit, **r.stat.as_dict(), "baseline": r.baseline,
                            "target": r.target, "baseline_target": r.baseline_target,
                            "ratios": ratios(r, by_key),
                            "goals": {goal: met for goal, met in goals(r, by_key)}, "note": r.note,
                            **({"series": list(r.series)} if r.series else {})} for r in rows},
    }
    e2e = by_key.get("end_to_end.values_per_s")
    document["end_to_end_values_per_s"] = e2e.stat.median if e2e else None
    # Issue 14's small-request figure: 1×10 bodies, the better of 1 and 2 edge workers.
    small = [by_key[k].stat.median for k in ("edge.requests_per_s.1x10", "edge.requests_per_s.1x10.workers2")
             if k in by_key]
    document["edge_small_requests_per_s"] = max(small) if small else None
    document["cpu_seconds_per_million_values"] = results_entry(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    return document
