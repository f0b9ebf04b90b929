"""The import: read a chunk, batch it, send its batches (at most `concurrency` in flight),
checkpoint each acknowledged batch, move on; a progress bar meanwhile, a summary at the end.

The next chunk is read and batched while the current one is sent (two chunks in
memory at most). The checkpoint's position moves past a chunk only once all its
batches have a verdict; a rerun starts at that chunk and skips the batches it lists
as acknowledged (of that chunk and the next). A batch that was in flight when the import
died is sent again under the same Idempotency-Key: the processor recognises the
repeat (within 24 h) and answers its first verdict, and readings keyed by
(thing, metric, event time) make even a later re-send overwrite, not duplicate.
Blocks until the file is done or the import is aborted.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

import httpx

from sluice.backfill import rows as rowsmod
from sluice.backfill.batches import make_batches
from sluice.backfill.checkpoint import Checkpoint, fingerprint
from sluice.backfill.sender import Outcome, Sender

BAD_ROW_EXAMPLES = 10


@dataclasses.dataclass(frozen=True)
class ImportOptions:
    url: str
    key: str
    fmt: str
    concurrency: int = 4
    chunk_values: int = 500_000
    max_body: int = 1_000_000
    wait_s: float = 30.0
    max_rate: float = 0.0  # values/s across all batches in flight; 0: as fast as verdicts come
    restart: bool = False
    progress: bool = True


@dataclasses.dataclass
class Summary:
    seconds: float
    totals: dict[str, int]
    reasons: dict[str, int]
    bad_examples: list[tuple[int, str]]
    resumed_at: int

    def render(self) -> str:
        t = self.totals
        rate = t.get("values_sent_now", 0) / self.seconds if self.seconds else 0.0
        lines = [f"rows read       {t.get('rows', 0):>12,}   bad rows {t.get('bad_rows', 0):,}",
                 f"values sent     {t.get('values', 0):>12,}   ({rate:,.0f} values/s this run"
                 + (f", resumed at position {self.resumed_at:,})" if self.resumed_at else ")"),
                 f"  accepted      {t.get('accepted', 0):>12,}"
                 + (f"   (of which {t['replayed']:,} already landed by an earlier run)" if t.get("replayed") else ""),
                 f"  pending       {t.get('pending', 0):>12,}   (durable, verdict not in within the wait; "
                 "see GET /v2/ingest-log)",
                 f"  rejected      {t.get('rejected', 0):>12,}",
                 *(f"    {reason}: {count:,} values" for reason, count in sorted(self.reasons.items())),
                 f"requests        {t.get('requests', 0):>12,}   retried {t.get('retries', 0):,}"]
        if self.bad_examples:
            lines.append("bad rows (first ones):")
            lines += [f"  row {row}: {reason}" for row, reason in self.bad_examples]
        return "\n".join(lines)


def run_import(path: Path, options: ImportOptions) -> Summary:
    started = time.monotonic()
    identity = fingerprint(path, options.fmt, options.chunk_values, options.max_body)
    checkpoint_path = Checkpoint.for_file(path)
    if options.restart:
        checkpoint_path.unlink(missing_ok=True)
    checkpoint = Checkpoint.load(checkpoint_path, identity)
    resumed_at = checkpoint.position
    examples: list[tuple[int, str]] = []
    bar = _Bar(options.progress, rowsmod.size(path, options.fmt), checkpoint.position)
    stop = threading.Event()
    lock = threading.Lock()
    with httpx.Client(base_url=options.url, headers={"X-Api-Key": options.key},
                      limits=httpx.Limits(max_connections=options.concurrency)) as client, \
            ThreadPoolExecutor(options.concurrency, thread_name_prefix="import") as pool, bar:
        sender = Sender(client, options.wait_s, stop=stop)
        pace = Pace(options.max_rate, stop)

        def send(batch):
            pace.take(batch.values)
            acknowledge(batch, sender.send(batch))

        def acknowledge(batch, outcome: Outcome) -> None:
            with lock:
                _count(checkpoint, batch.values, outcome)
                checkpoint.acknowledged.add(batch.key)
                checkpoint.save()
            bar.advance(outcome.accepted)

        def finish(chunk, futures) -> None:
            """Wait for a chunk's batches; then move the checkpoint past it."""
            done, not_done = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f.exception() for f in done if f.exception()), None)
            if failed:
                stop.set()
                wait(not_done)
                raise failed
            with lock:
                checkpoint.add("rows", chunk.rows)
                checkpoint.add("bad_rows", len(chunk.bad))
                checkpoint.position, checkpoint.rows = chunk.end, checkpoint.rows + chunk.rows
                prefix = f"{_prefix(identity, chunk.start)}-"
                checkpoint.acknowledged = {k for k in checkpoint.acknowledged if not k.startswith(prefix)}
                checkpoint.save()
            bar.move(chunk.end)

        if not checkpoint.complete:
            in_flight = None  # (chunk, futures): one chunk is sent while the next is read and batched
            try:
                for chunk in rowsmod.read_chunks(path, options.fmt, options.chunk_values, checkpoint.position,
                                                 checkpoint.rows):
                    batches, too_large = make_batches(chunk.frames, options.max_body,
                                                      _prefix(identity, chunk.start))
                    bad = chunk.bad + [(0, f"{thing} at {ts}: {why}") for thing, ts, why in too_large]
                    examples.extend(bad[:max(0, BAD_ROW_EXAMPLES - len(examples))])
                    todo = [b for b in batches if b.key not in checkpoint.acknowledged]
                    if in_flight is not None:
                        finish(*in_flight)  # bounds memory to two chunks, and keeps the checkpoint in order
                    in_flight = chunk, [pool.submit(send, b) for b in todo]
                if in_flight is not None:
                    finish(*in_flight)
            except KeyboardInterrupt:
                stop.set()
                raise
            checkpoint.complete = True
            checkpoint.save()
    totals = dict(checkpoint.totals, values_sent_now=bar.values)
    return Summary(time.monotonic() - started, totals, checkpoint.reasons, examples, resumed_at)


def _prefix(identity: str, position: int) -> str:
    """Batch keys of the chunk starting at `position`: `import-<fingerprint>-<position>-<n>`."""
    return f"import-{identity}-{position}"


def _count(checkpoint: Checkpoint, values: int, outcome: Outcome) -> None:
    checkpoint.add("values", values)
    for name in ("accepted", "pending", "replayed", "requests", "retries"):
        checkpoint.add(name, getattr(outcome, name))
    rejected = Counter(outcome.rejected)
    checkpoint.add("rejected", sum(rejected.values()))
    for reason, count in rejected.items():
        checkpoint.reasons[reason] = checkpoint.reasons.get(reason, 0) + count


class Pace:
    """Spaces batches so values leave at `rate` per second at most (0: no pacing); `take` blocks."""

    def __init__(self, rate: float, stop: threading.Event) -> None:
        self.rate, self.stop = rate, stop
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def take(self, values: int) -> None:
        if self.rate <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + values / self.rate
        self.stop.wait(start - now)


class _Bar:
    """A rich progress bar over the file's positions, with values/s; nothing when disabled."""

    def __init__(self, enabled: bool, total: int, start: int) -> None:
        self.values = 0
        self._started = time.monotonic()
        self._progress = None
        if enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._progress = Progress(TextColumn("importing"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                      TextColumn("{task.fields[values]:>12,} values  {task.fields[rate]:>9,.0f} "
                                                 "values/s"), TimeElapsedColumn(), TimeRemainingColumn())
            self._task = self._progress.add_task("import", total=total, completed=start, values=0, rate=0.0)

    def __enter__(self) -> "_Bar":
        if self._progress:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress:
            self._progress.stop()

    def advance(self, values: int) -> None:
        self.values += values
        if self._progress:
            rate = self.values / max(time.monotonic() - self._started, 1e-3)
            self._progress.update(self._task, values=self.values, rate=rate)

    def move(self, position: int) -> None:
        if self._progress:
            self._progress.update(self._task, completed=position)
