"""`python -m bench [--quick] [--only edge,processor,...,ingest_topic,...,rollups]`: run the benchmarks on this
machine against the real local broker and warehouse, print the table, write
bench/results.json."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Context, free_port
from bench.report import table, write_json

STAGES = ("edge", "processor", "sink", "kafka_engine", "end_to_end", "ingest_topic", "backfill", "rollups")
NO_BROKER = {"rollups"}  # stages that need no Kafka broker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small runs: checks the harness, not the machine")
    parser.add_argument("--only", default=",".join(STAGES), help=f"comma-separated subset of {STAGES}")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median/min/max)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results.json"))
    args = parser.parse_args(argv)
    stages = [s for s in args.only.split(",") if s]
    rows = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as scratch:
        broker = None
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
        if not bootstrap and set(stages) - NO_BROKER:
            from sluice.local_kafka import LocalKafka

            broker = LocalKafka(Path(scratch) / "broker", port=free_port(), heap="1g")
            bootstrap = broker.start()
        try:
            context = Context(bootstrap=bootstrap, scratch=Path(scratch), quick=args.quick, runs=args.runs)
            for stage in stages:
                print(f"bench: {stage} …", file=sys.stderr, flush=True)
                module = importlib.import_module(f"bench.{stage}")
                rows.extend(module.run(context))
        finally:
            if broker is not None:
                broker.stop()
    print(table(rows))
    write_json(rows, Path(args.out), {"quick": args.quick, "runs": args.runs, "stages": stages,
                                      "seconds": round(time.monotonic() - started)})
    print(f"\nbench: {len(rows)} figures in {time.monotonic() - started:.0f} s → {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
