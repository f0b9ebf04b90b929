"""Processor: metric values/s through the Faust agent, raw topic → frames topic.

Each run gets fresh topics with N pre-filled raw requests (100 frames × 10
Double metrics each) and a copy of the stage's catalog, then starts the real
processor (`python -m sluice.cli processor`) and polls the frames topic's end
offsets every 10 ms. Start-up (imports, catalog and idempotency views, group
join, partition assignment) is excluded by starting the clock when the first
frames message appears: the steady rate is (N - frames already there) × 1000
values / (time until all N are there). N is large enough (5000 requests, several
seconds of work) that one pause or a slow first batch cannot decide the figure.
(The ready file `state_dir/run/processor.ready` appears about 50 ms earlier on a
one-member group; the first output is used because it is observed from outside
and also excludes whatever group join is still pending after the ready file.)
Start-up is reported on its own (process start → first frames message), and so
is the longest pause in the output once it has begun: a stall shows there even
when the rate hides it.

Both sides also report the CPU their main thread (the agent's event loop; the
plain loop's only Python thread) spent per request over the same clocked span,
read from /proc (Linux only): on a machine of few cores the rate also depends on
the other threads and processes, so this says how much of a gap is the main
thread's own work.

Baseline: the same decode → normalize → encode → produce loop in this process
without Faust (confluent-kafka consumer and producer, a local CatalogView), also
producing each verdict to the results topic and waiting for the broker's acks per
batch before committing, as the agent does. Its clock follows the same rule:
it starts when the first batch's outputs are acknowledged (its first frames are
in the topic) and stops when the last output is acknowledged; the first batch's
messages are not counted.

Blocks for the whole measurement (roughly 15-25 s a run at full scale).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time

from confluent_kafka import Consumer, Producer

import schemas
from sluice.stack import terminate
from bench import fixtures as fx
from bench.common import Context, Row, Stat
from bench.stack_setup import cpu_seconds
from catalog.view import CatalogView
from processors.normalize import normalize
from schemas import frames

PROCESSOR_TIMEOUT_S = 180


def run(ctx: Context) -> list[Row]:
    requests = ctx.scale(5000, 1200)  # quick: still more than two of the agent's 500-message batches
    base = fx.stage_settings(ctx, "processor")
    fx.create_topics(base)
    fleet = fx.create_catalog(base)
    messages = fx.raw_messages(fleet, requests)
    agent, plain, startup, stalls, agent_cpu, plain_cpu = [], [], [], [], [], []
    for i in range(ctx.runs):
        run_ = _agent_run(ctx, base.topic_prefix, messages)
        agent.append(run_.values_per_s)
        startup.append(run_.first_output_s)
        stalls.append(run_.longest_pause_s)
        agent_cpu.append(run_.main_thread_us)
        fx.log(f"processor run {i + 1}: {run_.values_per_s:,.0f} values/s (first output after "
               f"{run_.first_output_s:.2f} s, longest pause {run_.longest_pause_s:.2f} s)")
        rate, cpu = _plain_run(ctx, base.topic_prefix, messages)
        plain.append(rate)
        plain_cpu.append(cpu)
        fx.log(f"plain loop run {i + 1}: {plain[-1]:,.0f} values/s")
    note = f"{requests} requests × {fx.VALUES_PER_MESSAGE} values, 4 partitions, one process"
    cpu_rows = [] if None in agent_cpu + plain_cpu else [
        Row("processor.baseline_main_thread_us", "processor baseline: main thread CPU per request", "µs",
            Stat.of(plain_cpu), lower_is_better=True, note="over the clocked span"),
        Row("processor.main_thread_us", "processor: the agent's main thread CPU per request", "µs",
            Stat.of(agent_cpu), baseline="processor.baseline_main_thread_us", lower_is_better=True,
            note="over the clocked span; the event loop: Faust's consumer, the agent, sends"),
    ]
    return [
        Row("processor.baseline_values_per_s", "processor baseline: plain decode→normalize→encode loop",
            "values/s", Stat.of(plain), note=note),
        Row("processor.values_per_s", "processor: Faust agent raw → frames", "values/s", Stat.of(agent),
            baseline="processor.baseline_values_per_s", baseline_target=0.9,
            note="clock starts at the first frames message"),
        Row("processor.first_output_s", "processor start-up: process start → first frames message", "s",
            Stat.of(startup), lower_is_better=True),
        Row("processor.longest_pause_s", "processor: longest pause in output after the first", "s",
            Stat.of(stalls), lower_is_better=True, note="frames topic polled every 10 ms"),
        *cpu_rows,
    ]


@dataclasses.dataclass(frozen=True)
class AgentRun:
    values_per_s: float  # from the first frames message to the last
    first_output_s: float  # process start → first frames message
    longest_pause_s: float  # longest time the frames topic did not grow, after the first message
    main_thread_us: float | None  # CPU of its main thread per request, over the clocked span


def _prepare(ctx: Context, catalog_prefix: str, messages: list[tuple[bytes, bytes]]):
    settings = fx.stage_settings(ctx, "processor")
    fx.create_topics(settings)
    fx.copy_catalog(settings.kafka_bootstrap, catalog_prefix, settings.topic_prefix)
    fx.produce(settings.kafka_bootstrap, schemas.Topics(settings.topic_prefix).raw, messages)
    return settings


def _agent_run(ctx: Context, catalog_prefix: str, messages: list[tuple[bytes, bytes]]) -> AgentRun:
    """One processor subprocess over the pre-filled raw topic."""
    settings = _prepare(ctx, catalog_prefix, messages)
    topics = schemas.Topics(settings.topic_prefix)
    total = len(messages)
    log_path = settings.state_dir / "processor.log"
    frames = fx.Watermarks(settings.kafka_bootstrap, topics.frames)
    spawned = time.perf_counter()
    process = fx.spawn(["-m", "sluice.cli", "processor"], log_path, settings.to_env())
    try:
        deadline = time.monotonic() + PROCESSOR_TIMEOUT_S
        first = start = None
        last, grew, pause = 0, 0.0, 0.0
        while True:
            done = frames.total()
            now = time.perf_counter()
            if first is None and done:
                first, start = done, now
                cpu_start = _thread_cpu_s(process.pid, process.pid)
            if done > last:
                pause = max(pause, now - grew) if last else 0.0
                last, grew = done, now
            if done >= total:
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"processor produced {done}/{total} frames messages "
                                   f"(exit code {process.poll()}); log:\n{fx.tail(log_path)}")
            time.sleep(0.01)
        if first >= total or now <= start:
            raise RuntimeError("the processor finished before the first poll: raise the request count")
        cpu = _per_request_us(cpu_start, _thread_cpu_s(process.pid, process.pid), total - first)
        return AgentRun((total - first) * fx.VALUES_PER_MESSAGE / (now - start), start - spawned, pause, cpu)
    finally:
        frames.close()
        terminate(process)


def _plain_run(ctx: Context, catalog_prefix: str,
               messages: list[tuple[bytes, bytes]]) -> tuple[float, float | None]:
    """Values/s of the loop without Faust, in this process, and its thread's CPU µs per request."""
    settings = _prepare(ctx, catalog_prefix, messages)
    topics = schemas.Topics(settings.topic_prefix)
    view = CatalogView(settings.kafka_bootstrap, topics.catalog)
    view.start()
    if not view.wait_ready(30):
        raise RuntimeError("baseline: the catalog view did not catch up")
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"{settings.topic_prefix}plain",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 5, "message.max.bytes": 16_000_000,
                         "compression.type": "lz4"})  # as the processor's output producer
    consumer.subscribe([topics.raw])

    def thing_lookup(org_id: str, thing_id: str) -> dict | None:
        return view.get("thing", thing_id, org_id)

    total, done, start, first = len(messages), 0, None, 0
    deadline = time.monotonic() + PROCESSOR_TIMEOUT_S
    try:
        while done < total:
            if time.monotonic() > deadline:
                raise RuntimeError(f"baseline: {done}/{total} raw messages after {PROCESSOR_TIMEOUT_S} s")
            batch = [m for m in consumer.consume(500, timeout=0.5) if m.error() is None]
            if not batch:
                continue
            for message in batch:
                envelope = schemas.decode(schemas.RAW_ENVELOPE, message.value())
                outcome = normalize(envelope, thing_lookup, view.resolution)
                if not outcome.frames:
                    raise RuntimeError(f"baseline: request rejected: {outcome.verdict}")
                _send(producer, topics.frames, outcome.frames[0]["thing_id"].encode(),
                      frames.encode(outcome.frames[0]))
                _send(producer, topics.results, outcome.request_id.encode(),
                      schemas.encode(schemas.VERDICT, outcome.verdict))
            # As the agent: every output acknowledged before the batch's offsets are committed.
            if producer.flush(60):
                raise RuntimeError("baseline: outputs not acknowledged")
            consumer.commit(asynchronous=True)
            done += len(batch)
            if start is None:  # the agent's rule: the clock starts once the first frames are in the topic
                start, first = time.perf_counter(), done
                cpu_start = _thread_cpu_s(os.getpid(), threading.get_native_id())
        if first >= total:
            raise RuntimeError("baseline: one batch held every message: raise the request count")
        rate = (total - first) * fx.VALUES_PER_MESSAGE / (time.perf_counter() - start)
        return rate, _per_request_us(cpu_start, _thread_cpu_s(os.getpid(), threading.get_native_id()), total - first)
    finally:
        consumer.close()
        view.stop()


def _send(producer: Producer, topic: str, key: bytes, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key)
            producer.poll(0)
            return
        except BufferError:
            producer.poll(0.05)



def _thread_cpu_s(pid: int, tid: int) -> float | None:
    """CPU seconds (user + system) one thread has used, or None where /proc does not say."""
    try:
        with open(f"/proc/{pid}/task/{tid}/stat") as stat:
            return cpu_seconds(stat.read())
    except OSError:
        return None


def _per_request_us(start: float | None, end: float | None, requests: int) -> float | None:
    return None if start is None or end is None else (end - start) / requests * 1e6
