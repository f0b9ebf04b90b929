"""Shared set-up for the processor, sink and Kafka-engine benchmarks.

Each measurement gets its own topic prefix (so its own topics and consumer
groups), a catalog written straight to its catalog topic (one thing type of
10 Double metrics, a few things), and topics pre-filled with one producer
before the clock starts: raw envelopes for the processor, FrameBatch messages
for the sink, RowBinary readings rows for ClickHouse's Kafka engine.

The workload unit is one request: 100 frames × 10 metrics = 1000 metric values.
Every (thing, metric, ts) is unique across a run, so a ReplacingMergeTree merge
can never make count() fall short of the rows sent.

Everything here blocks on the broker (topic creation, catalog writes, flushes).
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import struct
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import schemas
from schemas import frames
from bench.common import Context
from catalog.models import MetricDefinitionIn, PlaceIn, ThingIn, ThingTypeIn
from catalog.service import Catalog
from catalog.view import CatalogView
from catalog.writer import CatalogWriter
from config import Settings
from sluice.stack import die_with_parent, terminate
from sluice.topics_admin import ensure_topics

FRAMES = 100  # frames per request
METRICS = 10  # metric values per frame
VALUES_PER_MESSAGE = FRAMES * METRICS
THINGS = 8  # each is one catalog write (~0.2 s: the writer waits for its view)
_ROOT = Path(__file__).resolve().parent.parent  # children run from the project root
# A fixed past instant (2025-06-15 UTC, mid-month: one readings partition), so every
# process that builds the rows builds the same ones; the processor accepts any past time.
TS_BASE = 1_749_945_600_000


def stage_settings(ctx: Context, stage: str, **overrides: object) -> Settings:
    """Settings for one measurement: a fresh topic prefix and state folder on the run's broker.

    CLICKHOUSE_URL comes from the environment unless overridden (embedded: "")."""
    prefix = f"bench.{stage}.{secrets.token_hex(4)}."
    state = Path(ctx.scratch) / prefix.rstrip(".")
    return Settings.from_env(kafka_bootstrap=ctx.bootstrap, topic_prefix=prefix, state_dir=state,
                             partitions=4, **overrides)


def create_topics(settings: Settings) -> None:
    """The prefix's topics (raw, frames, ... with 4 partitions; catalog with one)."""
    ensure_topics(settings.kafka_bootstrap, settings)


def create_topic(bootstrap: str, name: str, partitions: int = 4) -> None:
    """One extra topic outside the pipeline's set (e.g. pre-normalized rows)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(30)


@dataclasses.dataclass(frozen=True)
class Fleet:
    """What the catalog holds for the benchmark: one org, one type, its metrics, the things."""

    org_id: str
    type_version_id: str
    metric_names: tuple[str, ...]
    metric_ids: tuple[str, ...]
    thing_ids: tuple[str, ...]


def create_catalog(settings: Settings, things: int = THINGS) -> Fleet:
    """Write the benchmark's catalog entities to the prefix's catalog topic (blocks per write)."""
    topic = schemas.Topics(settings.topic_prefix).catalog
    view = CatalogView(settings.kafka_bootstrap, topic)
    view.start()
    if not view.wait_ready(30):
        raise RuntimeError(f"catalog view on {topic} did not become ready")
    writer = CatalogWriter(settings.kafka_bootstrap, topic, view)
    try:
        catalog = Catalog(view, writer)
        org = "org_bench"
        catalog.ensure_org(org, "Bench")
        names = tuple(f"m{i}" for i in range(METRICS))
        ids = tuple(catalog.create_metric(org, MetricDefinitionIn(name=n, dataType="Double",
                                                                   defaultAggregation="Last"))["id"]
                    for n in names)
        thing_type = catalog.create_thing_type(org, ThingTypeIn(displayName="Bench", metricIds=list(ids)))
        site = catalog.create_place(org, "site", PlaceIn(name="Bench site"))
        thing_ids = tuple(catalog.create_thing(org, site["id"], "site",
                                               ThingIn(thingName=f"bench-{i}", thingTypeId=thing_type["id"]))["id"]
                          for i in range(things))
        return Fleet(org, thing_type["versionId"], names, ids, thing_ids)
    finally:
        writer.close()
        view.stop()


def copy_catalog(bootstrap: str, source_prefix: str, target_prefix: str) -> None:
    """Copy one prefix's catalog topic to another's, record for record (blocks until acknowledged).

    Writing a catalog through CatalogWriter costs ~0.2 s a record (it waits for
    its view), so a stage writes one and copies it for each further measurement."""
    source = schemas.Topics(source_prefix).catalog
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-copy-{secrets.token_hex(4)}",
                         "enable.auto.commit": False, "enable.partition.eof": False})
    _, end = consumer.get_watermark_offsets(TopicPartition(source, 0), timeout=10)
    consumer.assign([TopicPartition(source, 0, 0)])
    records: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + 30
    while len(records) < end and time.monotonic() < deadline:
        for message in consumer.consume(1000, timeout=0.5):
            if message.error() is None:
                records.append((message.key(), message.value()))
    consumer.close()
    if len(records) < end:
        raise RuntimeError(f"read {len(records)} of {end} catalog records from {source}")
    produce(bootstrap, schemas.Topics(target_prefix).catalog, records)


def synthetic_fleet() -> Fleet:
    """A fleet for stages that never consult the catalog (the sinks): ids only."""
    return Fleet("org_bench", "tdef_bench", tuple(f"m{i}" for i in range(METRICS)),
                 tuple(f"mdef_bench{i:015d}" for i in range(METRICS)),
                 tuple(f"thg_bench{i:016d}" for i in range(THINGS)))


def _first_ts(index: int) -> int:
    # Request i covers its own FRAMES milliseconds: no two requests share an event time.
    return TS_BASE + index * FRAMES


def _value(index: int, frame: int, metric: int) -> float:
    return round((index * 7 + frame * 3 + metric) % 10_000 * 0.01, 2)


def raw_messages(fleet: Fleet, count: int) -> list[tuple[bytes, bytes]]:
    """`count` RawEnvelope messages (key, value) as the edge would produce them."""
    out = []
    received = int(time.time() * 1000)
    for i in range(count):
        thing = fleet.thing_ids[i % len(fleet.thing_ids)]
        start = _first_ts(i)
        body = orjson.dumps({"frames": [
            {"timestamp": start + f,
             "metrics": {name: _value(i, f, m) for m, name in enumerate(fleet.metric_names)}}
            for f in range(FRAMES)]})
        envelope = {"request_id": f"req_bench{i:016d}", "org_id": fleet.org_id, "key_id": None,
                    "route": "thing_data", "received_at": received, "thing_id": thing, "stream": None,
                    "template_id": None, "idempotency_key": None, "content_type": "application/json",
                    "catalog_offset": -1, "body": body}
        out.append((thing.encode(), schemas.encode(schemas.RAW_ENVELOPE, envelope)))
    return out


def frame_batches(fleet: Fleet, count: int) -> list[dict]:
    """`count` FrameBatch records shaped exactly as the processor's normalize() emits them."""
    version = int(time.time() * 1000)
    batches = []
    for i in range(count):
        start = _first_ts(i)
        cells = [(start + f, mid, _value(i, f, m)) for f in range(FRAMES) for m, mid in enumerate(fleet.metric_ids)]
        readings = {"ts": [c[0] for c in cells], "metric_id": [c[1] for c in cells],
                    "data_type": ["Double"] * len(cells), "value": [c[2] for c in cells],
                    "value_long": [0] * len(cells), "value_string": [""] * len(cells)}
        batches.append({"request_id": f"req_bench{i:016d}", "org_id": fleet.org_id,
                        "thing_id": fleet.thing_ids[i % len(fleet.thing_ids)],
                        "type_version_id": fleet.type_version_id, "version": version, "frames": FRAMES,
                        "readings": readings, "locations": []})
    return batches


def frames_messages(batches: Iterable[dict]) -> list[tuple[bytes, bytes]]:
    """FrameBatch messages (key, value) as the processor encodes them."""
    return [(b["thing_id"].encode(), frames.encode(b)) for b in batches]


# --- RowBinary: the pre-normalized rows ClickHouse's Kafka engine reads -----------------

_INT64, _UINT64, _FLOAT64 = struct.Struct("<q").pack, struct.Struct("<Q").pack, struct.Struct("<d").pack


def _string(text: str) -> bytes:
    raw = text.encode()
    size, prefix = len(raw), bytearray()
    while True:  # LEB128 length
        byte, size = size & 0x7F, size >> 7
        prefix.append(byte | (0x80 if size else 0))
        if not size:
            return bytes(prefix) + raw


def rowbinary_message(batch: dict) -> bytes:
    """One FrameBatch's readings rows in RowBinary (columns in sinks.readings.COLUMNS order).

    One message per request, like the frames topic; the per-request columns are
    encoded once per message rather than once per row (it is fixture code)."""
    head = _string(batch["org_id"]) + _string(batch["thing_id"])
    tail = _string(batch["type_version_id"]) + _string(batch["request_id"]) + _UINT64(batch["version"])
    r = batch["readings"]
    rows = [b"".join((head, _string(r["metric_id"][i]), _INT64(r["ts"][i]), _string(r["data_type"][i]),
                      _FLOAT64(r["value"][i]), _INT64(r["value_long"][i]), _string(r["value_string"][i]), tail))
            for i in range(len(r["ts"]))]
    return b"".join(rows)


# --- producing and watching topics -------------------------------------------------------

def produce(bootstrap: str, topic: str, messages: Iterable[tuple[bytes, bytes]]) -> int:
    """Produce all messages with one batching producer; blocks until every one is acknowledged."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20,
                         "batch.size": 1_000_000, "message.max.bytes": 16_000_000,
                         "queue.buffering.max.kbytes": 1_048_576, "compression.type": "lz4"})
    failures: list = []
    sent = 0
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value=value, key=key,
                                 on_delivery=lambda err, _m: err and failures.append(err))
                break
            except BufferError:  # local queue full: let it drain
                producer.poll(0.05)
        producer.poll(0)
        sent += 1
    if producer.flush(120) or failures:
        raise RuntimeError(f"pre-filling {topic} failed: {failures[:3] or 'flush timed out'}")
    return sent


class Watermarks:
    """Total messages on a topic (sum of high watermarks), read without joining a group."""

    def __init__(self, bootstrap: str, topic: str, partitions: int = 4) -> None:
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-watch-{secrets.token_hex(4)}",
                                   "enable.auto.commit": False})
        self._partitions = [TopicPartition(topic, p) for p in range(partitions)]

    def total(self) -> int:
        return sum(self._consumer.get_watermark_offsets(tp, timeout=10, cached=False)[1]
                   for tp in self._partitions)

    def close(self) -> None:
        self._consumer.close()


def log(message: str) -> None:
    print(f"bench:   {message}", file=sys.stderr, flush=True)


def chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# --- child processes ---------------------------------------------------------------------

def spawn(args: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `python args...` in its own session, output to `log_path`; returns at once."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        return subprocess.Popen([sys.executable, *args], env={**os.environ, **(env or {})}, cwd=_ROOT,
                                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=die_with_parent)


def run_child(args: list[str], what: str, out: Path, log_path: Path, env: dict[str, str],
              timeout: float) -> dict:
    """Run `python args...` to completion and return the JSON it wrote to `out`.

    Blocks up to `timeout`; raises RuntimeError with the tail of its log if it
    times out, fails, or writes nothing.
    """
    child = spawn(args, log_path, env)
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        terminate(child)
        raise RuntimeError(f"{what} timed out; log:\n{tail(log_path)}") from None
    if child.returncode != 0 or not out.exists():
        raise RuntimeError(f"{what} failed with code {child.returncode}; log:\n{tail(log_path)}")
    return json.loads(out.read_text())


def tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
