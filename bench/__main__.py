"""`python -m bench [--quick] [--only edge,processor,...,ingest_topic,...,rollups,sync]`: run the benchmarks on this
machine against the real local broker and warehouse, print the table, write
bench/results.json."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.common import Context, free_port
from bench.report import table, write_json

STAGES = ("edge", "processor", "sink", "kafka_engine", "end_to_end", "overload", "ingest_topic", "backfill", "rollups",
          "sync")
NO_BROKER = {"rollups"}  # stages that need no Kafka broker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small runs: checks the harness, not the machine")
    parser.add_argument("--only", default=",".join(STAGES), help=f"comma-separated subset of {STAGES}")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median/min/max)")
    parser.add_argument("--soak-seconds", type=float, default=None,
                        help="end_to_end's half-load run (RSS growth, freshness): 600 by default, 6 with --quick")
    parser.add_argument("--soak-rate", type=float, default=None,
                        help="end_to_end's half-load run offers this many values/s instead of 250,000, half of "
                             "issue 14's target (half the sustained figure with --quick)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results.json"))
    args = parser.parse_args(argv)
    stages = [s for s in args.only.split(",") if s]
    rows = []
    stage_seconds: dict[str, float] = {}
    failed: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as scratch:
        broker = None
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
        if not bootstrap and set(stages) - NO_BROKER:
            from sluice.local_kafka import LocalKafka

            broker = LocalKafka(Path(scratch) / "broker", port=free_port(), heap="1g")
            bootstrap = broker.start()
        try:
            # `earlier` is the same list as `rows`: a stage can reuse a baseline an earlier stage measured.
            context = Context(bootstrap=bootstrap, scratch=Path(scratch), quick=args.quick, runs=args.runs,
                              soak_seconds=args.soak_seconds, soak_rate=args.soak_rate,
                              earlier=rows)
            for stage in stages:
                print(f"bench: {stage} …", file=sys.stderr, flush=True)
                stage_started = time.monotonic()
                module = importlib.import_module(f"bench.{stage}")
                try:
                    rows.extend(module.run(context))
                except Exception:
                    # One broken stage must not cost the figures of the others (a full run is 20 minutes).
                    traceback.print_exc()
                    failed.append(stage)
                stage_seconds[stage] = round(time.monotonic() - stage_started, 1)
                print(f"bench: {stage} {'FAILED after' if stage in failed else 'took'} "
                      f"{_duration(stage_seconds[stage])}", file=sys.stderr, flush=True)
        finally:
            if broker is not None:
                broker.stop()
    total = time.monotonic() - started
    print(table(rows))
    write_json(rows, Path(args.out), {"quick": args.quick, "runs": args.runs, "stages": stages,
                                      "soak_seconds": args.soak_seconds,
                                      "soak_rate": args.soak_rate, "seconds": round(total),
                                      "stage_seconds": stage_seconds, "failed_stages": failed})
    # The rest of the total is the broker's start and stop.
    print(f"\nbench: wall time {_duration(total)} (" + ", ".join(f"{stage} {_duration(seconds)}"
                                                           for stage, seconds in stage_seconds.items()) + ")")
    print(f"bench: {len(rows)} figures → {args.out}")
    if failed:
        print(f"bench: FAILED stages: {', '.join(failed)} (their tracebacks are above)")
    return 1 if failed else 0


def _duration(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60} min {whole % 60:02d} s" if whole >= 60 else f"{whole} s"


if __name__ == "__main__":
    sys.exit(main())
