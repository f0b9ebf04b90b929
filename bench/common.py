"""What every benchmark shares: repeated runs summarized as median/min/max, the
result rows, and a broker for the whole run."""

from __future__ import annotations

import dataclasses
import socket
import statistics
import time
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Stat:
    """A figure measured over several runs."""

    median: float
    low: float
    high: float
    runs: int

    @classmethod
    def of(cls, values: list[float]) -> "Stat":
        return cls(statistics.median(values), min(values), max(values), len(values))

    def as_dict(self) -> dict:
        return {"median": self.median, "min": self.low, "max": self.high, "runs": self.runs}


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the report: a figure, and optionally what it is compared against.

    `baseline` names another row's key; the report prints value/baseline as a ratio.
    `target` is a goal from the issue, printed as a ratio too (value/target, or
    target/value when `lower_is_better`); `baseline_target` is a goal for value/baseline.
    The report marks each goal met or not. `series` is kept in results.json only.
    """

    key: str  # stable, e.g. "edge.values_per_s.100x10"
    label: str  # what a reader sees
    unit: str
    stat: Stat
    baseline: str | None = None
    target: float | None = None
    lower_is_better: bool = False
    note: str = ""
    baseline_target: float | None = None
    series: tuple[float, ...] = ()


@dataclasses.dataclass
class Context:
    """Handed to every benchmark: the broker, a scratch folder, the run's scale."""

    bootstrap: str
    scratch: "object"  # pathlib.Path
    quick: bool  # smaller runs, for a smoke test of the harness
    runs: int = 3
    soak_seconds: float | None = None  # end_to_end's half-load run; None: the stage's default
    soak_rate: float | None = None  # values/s of that run; None: half the sustained figure
    earlier: list = dataclasses.field(default_factory=list)  # rows of the stages that already ran

    def scale(self, full: int, quick: int) -> int:
        return quick if self.quick else full


def free_port(pair: bool = True) -> int:
    """A loopback TCP port that was free a moment ago, and with `pair` the next one too
    (the local broker's controller listens on port + 1)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if not pair:
            return port
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result
