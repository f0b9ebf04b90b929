"""Kafka-native ingest: values/s through the public ingest topic with schema-registry Avro,
against the same frames through HTTP, on one stack in the same run.

The stack's processor knows a schema registry (a LocalRegistry in the run's scratch folder,
or SLUICE_SCHEMA_REGISTRY_URL). A burst of messages of 100 frames × 10 Double metrics, each
serialized beforehand with confluent-kafka's AvroSerializer (Confluent wire format, the
public frames schema, an org key with the write scope in `sluice-api-key`), is produced as
fast as the broker takes it; the figure is the pipeline's drain, measured as end_to_end's
is: 10 % → 90 % of the burst's readings visible in `readings` (count() over the burst's
event-time slot, polled through the edge's admin SQL). The HTTP baseline is end_to_end's
drain of a burst of the same size and shape on the same stack.

Needs the processor side of the ingest topic (processors/ingest_topic.py); without it the
stage reports nothing. Blocks for about a minute at full scale (seconds with --quick).
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from bench.common import Context, Row, Stat, free_port
from bench.end_to_end import FRAMES, METRICS, VALUES, Plan, Slots, _drain, _time_at, _visible
from bench.stack_setup import BenchStack, Fleet

AVRO = b"application/vnd.sluice.frames+avro"


def run(ctx: Context) -> list[Row]:
    try:
        import processors.ingest_topic  # noqa: F401
    except ImportError:
        print("bench: ingest_topic skipped: this build has no ingest topic processor", file=sys.stderr)
        return []
    plan = Plan.of(ctx)
    with _registry(ctx) as registry_url, BenchStack(ctx, "ingest", schema_registry_url=registry_url) as bench:
        fleet = bench.register(things=plan.things)
        key = _write_key(bench)
        slots = Slots()
        avro, http = [], []
        for _ in range(ctx.runs):  # alternate, so both see the same warm-up and background
            avro.append(_drain_ingest_topic(bench, fleet, key, slots, plan, registry_url))
            http.append(_drain(bench, fleet, slots, plan))
        bench.check_alive()
    note = (f"bursts of {plan.burst:,} messages of {FRAMES}×{METRICS}, 10→90 % of the burst's readings visible; "
            f"alternating with HTTP on one stack")
    return [
        Row("ingest_topic.drain_values_per_s.avro", "ingest topic (Avro) drain values/s", "values/s",
            Stat.of(avro), baseline="ingest_topic.drain_values_per_s.http",
            note=note + "; serialized beforehand with AvroSerializer, produced raw"),
        Row("ingest_topic.drain_values_per_s.http", "HTTP drain values/s (same frames)", "values/s",
            Stat.of(http), note=note + "; the load client of end_to_end"),
    ]


@contextlib.contextmanager
def _registry(ctx: Context) -> Iterator[str]:
    """SLUICE_SCHEMA_REGISTRY_URL if set, else a LocalRegistry in the scratch folder; yields its URL."""
    from sluice.local_registry import LocalRegistry

    if os.environ.get("SLUICE_SCHEMA_REGISTRY_URL"):
        yield os.environ["SLUICE_SCHEMA_REGISTRY_URL"]
        return
    with LocalRegistry(Path(ctx.scratch) / "registry", port=free_port()) as local:
        yield local.url


def _write_key(bench: BenchStack) -> str:
    """An org key with the write scope: the platform-admin key is refused on the ingest topic."""
    reply = bench.client.post("/v2/api-keys", json={"name": "bench-producer", "scopes": ["write"]})
    if reply.status_code != 201:
        raise RuntimeError(f"POST /v2/api-keys answered {reply.status_code}: {reply.text}")
    return reply.json()["key"]


def _messages(bench: BenchStack, fleet: Fleet, base: int, count: int, registry_url: str) -> list[tuple[str, bytes]]:
    """(thing id, wire-format value) × count, round-robin over the fleet; every frame has its own ts."""
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    from schemas.public import frames_schema_text

    serialize = AvroSerializer(SchemaRegistryClient({"url": registry_url}), frames_schema_text())
    where = SerializationContext(f"{bench.settings.topic_prefix}ingest", MessageField.VALUE)
    rng = random.Random(7)
    variants = [{f"m{m}": rng.uniform(0, 100) for m in range(METRICS)} for _ in range(256)]
    out = []
    for i in range(count):
        first = base + i * FRAMES
        body = {"frames": [{"timestamp": first + f, "metrics": variants[(i + f) % len(variants)]}
                           for f in range(FRAMES)]}
        out.append((fleet.thing_ids[i % len(fleet.thing_ids)], serialize(body, where)))
    return out


def _drain_ingest_topic(bench: BenchStack, fleet: Fleet, key: str, slots: Slots, plan: Plan,
                        registry_url: str) -> float:
    """Values/s made visible while working off a burst produced to the ingest topic at full speed."""
    from confluent_kafka import Producer

    base, _ = slots.take(requests=plan.burst)
    messages = _messages(bench, fleet, base, plan.burst, registry_url)
    total = len(messages) * VALUES
    topic = f"{bench.settings.topic_prefix}ingest"
    headers = [("sluice-api-key", key.encode()), ("content-type", AVRO)]
    errors: list[str] = []

    def produce() -> None:
        producer = Producer({"bootstrap.servers": bench.ctx.bootstrap, "acks": "all", "enable.idempotence": True,
                             "linger.ms": 5, "compression.type": "lz4"})
        for thing, value in messages:
            while True:
                try:
                    producer.produce(topic, value, thing.encode(), headers=headers,
                                     on_delivery=lambda err, _: err and errors.append(str(err)))
                    break
                except BufferError:  # the client's queue is full: let deliveries drain it
                    producer.poll(0.05)
            producer.poll(0)
        producer.flush(60)

    producing = threading.Thread(target=produce, name="bench-ingest-producer")
    producing.start()
    samples = []
    deadline = time.time() + plan.drain_cap
    while not samples or samples[-1][1] < total:
        if time.time() > deadline:
            break
        samples.append(_visible(bench, base))
        time.sleep(0.5)
    producing.join()
    bench.check_alive()
    if errors:
        raise RuntimeError(f"{len(errors)} messages were not delivered, e.g. {errors[0]}")
    if samples[-1][1] < 0.9 * total:
        raise RuntimeError(f"only {samples[-1][1]:,} of {total:,} values became visible in {plan.drain_cap} s; "
                           f"see the ingest log and rejects of {bench.settings.database}")
    return 0.8 * total / (_time_at(samples, 0.9 * total) - _time_at(samples, 0.1 * total))
