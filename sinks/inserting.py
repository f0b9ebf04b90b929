"""The task a sink's chain runs in arroyo's RunTaskInThreads: one batch into the warehouse.

A refused insert is retried in place, with backoff, so the batch's offsets are never
passed on to the commit step before the warehouse holds its rows; while it retries,
the steps before it fill up and the consumer loop pauses its partitions (arroyo's
MessageRejected), so a warehouse outage delays data but never drops it. Once the chain
is closing (the sink stops, or partitions are revoked) an attempt under way still
finishes, but a failed one is not tried again: the task raises InsertAbandoned, nothing
after it is committed, and the next owner of the partitions replays the batch.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

from arroyo.types import Message

from bus import metrics
from sinks.batches import Batch

log = logging.getLogger(__name__)

# Decodes one batch of message values and inserts it; gets the dedup token; returns rows. May raise.
InsertBatch = Callable[[list, str], int]
MAX_BACKOFF_S = 10.0


def name_thread(name: str) -> None:
    """Names the calling thread for the OS (15 bytes show): every Python thread is "python" there, and a
    sink shares its process with the HTTP edge, whose CPU `top -H` and the bench tell apart by the name.
    Not the main thread, whose name is the process's. Written to the thread's own `comm` rather than
    through setproctitle: installed, that library is also picked up by Faust, whose process title then
    overwrites the processor's /proc environ."""
    if threading.current_thread() is threading.main_thread():
        return
    try:
        Path(f"/proc/self/task/{threading.get_native_id()}/comm").write_text(name[:15])
    except OSError:
        pass  # not Linux: the name is only for the operator's eyes


class InsertAbandoned(Exception):
    """A batch was not inserted because the chain is closing: its offsets must not be committed."""


class Inserting:
    """Calls `insert` for each batch until it succeeds or the chain closes (`closing`)."""

    def __init__(self, insert: InsertBatch, name: str) -> None:
        self._insert = insert
        self.name = name
        self.closing = threading.Event()  # set: the attempt under way is the last
        self.failing = ""  # why inserts fail, while they do (the consumer loop reports it)
        self.rows_inserted = 0
        for family in (metrics.ROWS_INSERTED, metrics.INSERT_ERRORS):
            family.labels(name)  # exported at 0 from the start, so rates and alerts see it

    def __call__(self, message: Message[Batch]) -> int:
        """Blocks while the insert is retried; raises InsertAbandoned once closing."""
        batch = message.payload
        name_thread(self.name)  # arroyo's pool thread, named as the sink's loop is
        delay = 0.2
        while True:
            try:
                started = time.monotonic()
                rows = self._insert(batch.values, batch.token)
            except Exception as exc:
                metrics.INSERT_ERRORS.labels(self.name).inc()
                log.exception("%s: insert failed; retrying in %.1fs", self.name, delay)
                self.failing = f"insert failing: {exc}"
                if self.closing.wait(delay):
                    raise InsertAbandoned(f"{self.name}: a batch of {len(batch.values)} messages was not "
                                          "inserted; the next owner of its partitions replays it") from exc
                delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            self._count(batch, rows, time.monotonic() - started)
            return rows

    def _count(self, batch: Batch, rows: int, seconds: float) -> None:
        metrics.INSERT_DURATION.labels(self.name).observe(seconds)
        metrics.ROWS_INSERTED.labels(self.name).inc(rows)
        metrics.LAST_INSERT.labels(self.name).set_to_current_time()
        metrics.SINK_BATCH.labels(self.name).observe(len(batch.values))
        metrics.SINK_BYTES.labels(self.name).inc(batch.size)
        self.rows_inserted += rows
        self.failing = ""
