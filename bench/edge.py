"""Edge benchmark: what the edge accepts, against a bare producer on the same topic.

For each body shape (100 frames × 10 metrics, 1 frame × 10 metrics) the load client
(`bench.loadgen`, its own process, 64 requests in flight) posts to
`/v2/thing/{id}/data` for a fixed time; a figure is ok replies (202) per second, the metric
values they carried per second, and the p50/p99 latency of those 202s. The processor is
stopped first, so the edge is measured alone, not fighting the processor for the two cores.

The baseline is the edge's Kafka leg without HTTP: one confluent-kafka producer with the
edge's settings sending the same raw envelopes (Avro, the same body bytes) to the same raw
topic as fast as it can, from this process, counting what the broker acknowledged.

Small bodies are also measured with two edge workers sharing the port
(`SLUICE_EDGE_WORKERS=2`, a second stack); the load client then runs as two
processes, since one client core is not enough near 10,000 requests/s.
Blocks for about runs × (3 × duration + 2 × baseline) seconds plus two stacks' start.
"""

from __future__ import annotations

import time

from confluent_kafka import Producer

import schemas
from bench.common import Context, Row, Stat
from bench.loadgen import Bodies, drive
from bench.stack_setup import BenchStack
from catalog.ids import request_id
from producers.edge.raw_producer import PRODUCER_CONFIG

SHAPES = ((100, 10), (1, 10))
CONCURRENCY = 64
SMALL_TARGET_RPS = 10_000  # issue 14: 1×10 bodies, 202 after the ack, ≤ 2 edge workers
SMALL_P99_TARGET_MS = 50


def run(ctx: Context) -> list[Row]:
    duration = ctx.scale(8, 2)
    bare_seconds = ctx.scale(5, 1)
    warmup = 1.0 if not ctx.quick else 0.5
    rows: list[Row] = []
    with BenchStack(ctx, "edge") as bench:
        fleet = bench.register(things=ctx.scale(50, 10))
        bench.stop_service("processor")
        for frames, metrics in SHAPES:
            shape = f"{frames}x{metrics}"
            loads = [drive(bench.url, bench.key, fleet.thing_ids, frames=frames, metrics=metrics,
                           concurrency=CONCURRENCY, duration=duration, warmup=warmup) for _ in range(ctx.runs)]
            bench.check_alive()
            bare = [bare_producer(bench, fleet.thing_ids, frames, metrics, bare_seconds) for _ in range(ctx.runs)]
            rows += _rows(shape, frames * metrics, loads, bare)
    with BenchStack(ctx, "edge2", edge_workers=2) as bench:
        fleet = bench.register(things=ctx.scale(50, 10))
        bench.stop_service("processor")
        # Two client processes of 32 in flight each: the same 64 requests in flight as above.
        loads = [drive(bench.url, bench.key, fleet.thing_ids, frames=1, metrics=10, concurrency=CONCURRENCY // 2,
                       procs=2, duration=duration, warmup=warmup) for _ in range(ctx.runs)]
        bench.check_alive()
        rows += _worker_rows(loads)
    return rows


def _worker_rows(loads: list[dict]) -> list[Row]:
    errors = {k: v for load in loads for k, v in load["errors"].items()}
    client = Stat.of([x["client_cpu_cores"] for x in loads]).median
    note = (f"2 edge workers; {CONCURRENCY} in flight from 2 client processes; processor stopped; "
            f"load client {client:.0%} of a core" + (f"; errors {errors}" if errors else ""))
    return [
        Row("edge.requests_per_s.1x10.workers2", "edge requests/s (1x10), 2 edge workers", "requests/s",
            Stat.of([x["requests_per_s"] for x in loads]), baseline="edge.requests_per_s.1x10",
            target=SMALL_TARGET_RPS, note=note),
        Row("edge.latency_p50_ms.1x10.workers2", "edge 202 latency p50 (1x10), 2 edge workers", "ms",
            Stat.of([x["p50_ms"] for x in loads]), lower_is_better=True),
        Row("edge.latency_p99_ms.1x10.workers2", "edge 202 latency p99 (1x10), 2 edge workers", "ms",
            Stat.of([x["p99_ms"] for x in loads]), target=SMALL_P99_TARGET_MS, lower_is_better=True),
    ]


def _rows(shape: str, values_per_request: int, loads: list[dict], bare: list[float]) -> list[Row]:
    errors = {k: v for load in loads for k, v in load["errors"].items()}
    client = Stat.of([x["client_cpu_cores"] for x in loads]).median
    note = (f"{CONCURRENCY} in flight; processor stopped; load client {client:.0%} of a core"
            + (f"; errors {errors}" if errors else ""))
    baseline = Stat.of(bare)
    base_key = f"edge.bare_producer.values_per_s.{shape}"
    return [
        Row(base_key, f"bare producer values/s ({shape}, baseline)", "values/s", baseline,
            note="one confluent-kafka producer, edge settings, same envelopes and topic"),
        Row(f"edge.values_per_s.{shape}", f"edge metric values/s ({shape})", "values/s",
            Stat.of([x["values_per_s"] for x in loads]), baseline=base_key, target=0.5 * baseline.median,
            note=f"target 0.5 × bare producer; {note}"),
        Row(f"edge.requests_per_s.{shape}", f"edge requests/s ({shape}), 1 edge worker", "requests/s",
            Stat.of([x["requests_per_s"] for x in loads]),
            target=SMALL_TARGET_RPS if values_per_request == 10 else None,
            note=f"{values_per_request} values per request"),
        Row(f"edge.latency_p50_ms.{shape}", f"edge 202 latency p50 ({shape})", "ms",
            Stat.of([x["p50_ms"] for x in loads]), lower_is_better=True),
        Row(f"edge.latency_p99_ms.{shape}", f"edge 202 latency p99 ({shape})", "ms",
            Stat.of([x["p99_ms"] for x in loads]), lower_is_better=True),
    ]


def bare_producer(bench: BenchStack, things: list[str], frames: int, metrics: int, seconds: float) -> float:
    """Metric values/s the broker acknowledged from one producer sending as fast as it can."""
    settings = bench.settings
    # The edge's producer settings (producers/edge/raw_producer.py), without its asyncio face.
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, **PRODUCER_CONFIG})
    topic = schemas.Topics(settings.topic_prefix).raw
    bodies = Bodies(frames, metrics)
    # A pool of ready envelopes: the baseline is the Kafka leg's ceiling, not Avro's.
    base_ts = int(time.time() * 1000) - 86_400_000
    pool = [(things[i % len(things)].encode(), _envelope(things[i % len(things)], bodies.body(base_ts + i * frames)))
            for i in range(256)]
    acked = [0]

    def delivered(error, message) -> None:
        if error is None:
            acked[0] += 1

    producer.list_topics(topic, timeout=10)  # metadata before the clock starts
    start = time.perf_counter()
    stop, sent = start + seconds, 0
    while time.perf_counter() < stop:
        key, value = pool[sent % len(pool)]
        try:
            producer.produce(topic, key=key, value=value, on_delivery=delivered)
        except BufferError:  # local queue full: let deliveries drain it
            producer.poll(0.005)
            continue
        sent += 1
        if sent % 512 == 0:
            producer.poll(0)
    producer.flush(60)
    return acked[0] * frames * metrics / (time.perf_counter() - start)


def _envelope(thing_id: str, body: bytes) -> bytes:
    return schemas.encode(schemas.RAW_ENVELOPE, {
        "request_id": request_id(), "org_id": "org_default", "key_id": "bench", "route": "thing_data",
        "received_at": int(time.time() * 1000), "thing_id": thing_id, "stream": None, "template_id": None,
        "idempotency_key": None, "content_type": "application/json", "catalog_offset": 0, "body": body})
