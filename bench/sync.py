"""Sync reply latency at light load, with enough samples for an honest p99, and where it goes.

One stack on the run's broker (edge, processor), loaded by `bench.loadgen` with 20 requests/s
of 1 frame × 10 Double metrics and `Prefer: wait=5` for 60 s after a 5 s warm-up: 1,200 replies
(end_to_end's sync row has 200, so its p99 is the second-worst reply). The figures are the
200s' latency p50/p90/p99/max as the client saw it; issue 14's target is p99 ≤ 20 ms.

The breakdown follows each request through wall-clock timestamps (one machine, one clock):
the client's send and reply (the load client's samples), the edge's `received_at` in the raw
envelope, the raw message's and the verdict's Kafka CreateTime (when the edge, then the
processor, called produce), and when each became readable to a consumer in this process
(two `TopicTail`s on the raw and results topics). Kafka timestamps and `received_at` are
whole milliseconds, so each part is ±1 ms; the parts of one request add up to its latency.

Blocks for about 80 s (seconds with --quick).
"""

from __future__ import annotations

import threading
import time

import orjson

import schemas
from bench.common import Context, Row, Stat
from bench.loadgen import drive, percentile
from bench.stack_setup import BenchStack
from bus.tail import TopicTail

RATE = 20  # requests/s
FRAMES, METRICS = 1, 10
THINGS = 10
TARGET_P99_MS = 20  # issue 14
# (key, what the part covers), in the order a request goes through them.
PARTS = (
    ("to_edge", "client send → edge received (HTTP, routing)"),
    ("edge", "edge received → raw produce called (auth, envelope)"),
    ("raw_ack", "raw produce called → readable on the raw topic (linger, broker)"),
    ("processor", "raw readable → verdict produce called (fetch, batch window, judging)"),
    ("verdict_ack", "verdict produce called → readable on the results topic (linger, broker)"),
    ("reply", "verdict readable → client has the reply (listener, handoff, HTTP)"),
)


class _Seen:
    """When each message of a topic became readable here, keyed by request id; filled on a tail's thread."""

    def __init__(self, ctx: Context, topic: str, name: str, key) -> None:
        self.at: dict[str, tuple[float, int, object]] = {}  # request id → (seen, CreateTime ms, detail)
        self._lock = threading.Lock()
        self._key = key
        self.tail = TopicTail(ctx.bootstrap, topic, self._on_message, name=name, from_beginning=False)

    def _on_message(self, message) -> None:
        seen = time.time() * 1000
        request_id, detail = self._key(message)
        with self._lock:
            self.at[request_id] = (seen, message.timestamp()[1], detail)


def _raw_key(message) -> tuple[str, object]:
    envelope = schemas.decode(schemas.RAW_ENVELOPE, message.value())
    first_ts = orjson.loads(envelope["body"])["frames"][0]["timestamp"]
    return envelope["request_id"], (envelope["thing_id"], first_ts, envelope["received_at"])


def _verdict_key(message) -> tuple[str, object]:
    return message.key().decode(), None


def run(ctx: Context) -> list[Row]:
    duration, warmup = (5, 1) if ctx.quick else (60, 5)
    with BenchStack(ctx, "sync") as bench:
        fleet = bench.register(things=THINGS)
        topics = schemas.Topics(bench.settings.topic_prefix)
        raw = _Seen(ctx, topics.raw, "bench-sync-raw", _raw_key)
        verdicts = _Seen(ctx, topics.results, "bench-sync-results", _verdict_key)
        for seen in (raw, verdicts):
            seen.tail.start()
            if not seen.tail.wait_ready(30):
                raise RuntimeError("the bench's tails could not position themselves")
        samples = ctx.scratch / "sync-samples.csv"
        try:
            result = drive(bench.url, bench.key, fleet.thing_ids, frames=FRAMES, metrics=METRICS, concurrency=8,
                           duration=duration, warmup=warmup, rate=RATE, sync=True, samples=samples)
            time.sleep(0.5)  # the tails' last messages
        finally:
            raw.tail.stop()
            verdicts.tail.stop()
        bench.check_alive()
    parts = _breakdown(samples.read_text().splitlines(), raw.at, verdicts.at)
    note = (f"{RATE} requests/s of {FRAMES}×{METRICS}, Prefer: wait=5, {duration:g} s; "
            f"{result['ok']} of {result['requests']} answered 200"
            + (f", others {result['errors']}" if result["errors"] else ""))
    rows = [Row(f"sync.{name}_ms", f"sync reply latency {name}", "ms", Stat.of([result[f"{name}_ms"]]),
                lower_is_better=True, note=note, target=TARGET_P99_MS if name == "p99" else None)
            for name in ("p50", "p90", "p99", "max")]
    joined = len(parts["to_edge"])
    for name, what in PARTS:
        for q in (50, 99):
            rows.append(Row(f"sync.part.{name}.p{q}_ms", f"  {name} p{q}", "ms",
                            Stat.of([percentile(parts[name], q)]), lower_is_better=True,
                            note=f"{what}; {joined} requests" if q == 50 else ""))
    return rows


def _breakdown(samples: list[str], raw: dict, verdicts: dict) -> dict[str, list[float]]:
    """Each part's durations (ms) over the requests seen at every step."""
    replies = {}
    for line in samples:
        thing, first_ts, accepted_ms, latency_ms = line.split(",")
        replies[(thing, int(first_ts))] = (float(accepted_ms), float(latency_ms))
    parts: dict[str, list[float]] = {name: [] for name, _ in PARTS}
    for request_id, (raw_seen, raw_created, (thing, first_ts, received_at)) in raw.items():
        reply = replies.get((thing, first_ts))
        verdict = verdicts.get(request_id)
        if reply is None or verdict is None:
            continue  # a warm-up request, or one that did not answer 200
        accepted, latency = reply
        verdict_seen, verdict_created, _ = verdict
        stamps = (accepted - latency, received_at, raw_created, raw_seen, verdict_created, verdict_seen, accepted)
        for (name, _), start, end in zip(PARTS, stamps, stamps[1:]):
            parts[name].append(end - start)
    return parts
