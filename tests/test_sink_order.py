"""The readings sink's order on a real broker and chDB: every reading lands exactly once
although the warehouse refuses an insert mid-stream, the group's committed offsets never
cover a row the table does not hold yet, stop() lets the insert under way finish, and
partitions handed back while the sink waits out a failure lose nothing, and a revocation
lets the insert under way finish and commits it before the partitions go."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import schemas
from schemas import frames
from tests.conftest import eventually, session_settings
from warehouse.backend import WarehouseUnavailable

MESSAGES = 60
VALUES = 4  # readings per message
PARTITIONS = 3


class SlowAndRefusing:
    """The real warehouse behind a readings insert that takes a while (so the sink reads ahead
    meanwhile) and calls `check` first, refuses the `refuse_at`-th one, and waits at `gate_at`
    until `gate` opens."""

    def __init__(self, warehouse, refuse_at: int = 0, gate_at: int = 0, check=lambda: None) -> None:
        self._warehouse = warehouse
        self._refuse_at, self._gate_at, self._check = refuse_at, gate_at, check
        self.attempts = 0
        self.gate, self.at_gate, self.past_gate = threading.Event(), threading.Event(), threading.Event()

    def insert(self, table, columns, dedup_token=None) -> None:
        if table == "readings":
            self.attempts += 1
            time.sleep(0.05)
            self._check()
            if self.attempts == self._refuse_at:
                raise WarehouseUnavailable("refused for a moment (test)")
            if self.attempts == self._gate_at:
                self.at_gate.set()
                self.gate.wait(30)
        self._warehouse.insert(table, columns, dedup_token)
        if table == "readings" and self.attempts == self._gate_at:
            self.past_gate.set()

    def __getattr__(self, name):
        return getattr(self._warehouse, name)


@pytest.fixture()
def pipeline(kafka_bootstrap, tmp_path):
    """Settings with small batches, a warehouse, and a frames topic pre-filled with MESSAGES
    FrameBatch messages; yields them with {request id: (partition, offset)}."""
    from warehouse import open_warehouse

    settings = session_settings(kafka_bootstrap, tmp_path, sink_batch_messages=5, sink_batch_ms=100)
    topic = schemas.Topics(settings.topic_prefix).frames
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
    placed: dict[str, tuple[int, int]] = {}
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(MESSAGES):
        request = f"req_{i:04d}"
        producer.produce(topic, key=f"thg_{i % 7}".encode(), value=frames.encode(frame_batch(i, request)),
                         on_delivery=lambda err, m, r=request: placed.__setitem__(r, (m.partition(), m.offset())))
    assert producer.flush(30) == 0 and len(placed) == MESSAGES
    warehouse = open_warehouse(settings)
    warehouse.migrate()
    try:
        yield settings, warehouse, placed
    finally:
        warehouse.close()


def frame_batch(i: int, request: str) -> dict:
    return {"request_id": request, "org_id": "org_a", "thing_id": f"thg_{i % 7}", "type_version_id": "tdef_1",
            "version": 1718884800123, "frames": 1,
            "readings": {"ts": [1718884800000 + i] * VALUES, "metric_id": [f"mdef_{m}" for m in range(VALUES)],
                         "data_type": ["Double"] * VALUES, "value": [float(i)] * VALUES, "value_long": [0] * VALUES,
                         "value_string": [""] * VALUES},
            "locations": []}


def start_sink(settings, warehouse):
    from sinks.warehouse_sinks import SINKS, build_sink

    spec = next(spec for spec in SINKS if spec.name == "sink-readings")
    sink = build_sink(spec, settings, settings.kafka_bootstrap, warehouse)
    thread = threading.Thread(target=sink.run, daemon=True)
    thread.start()
    return sink, thread


def stop_sinks(*started) -> None:
    """Stop each (sink, thread) that was started (a None sink was not)."""
    for sink, thread in started:
        if sink is not None:
            sink.stop()
            thread.join(30)


def committed(settings) -> dict[int, int]:
    """The sink group's committed offset per partition (0: none yet)."""
    group = f"{settings.topic_prefix}sink-readings"
    probe = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": group})
    topic = schemas.Topics(settings.topic_prefix).frames
    try:
        for attempt in range(50):
            try:
                return {tp.partition: max(tp.offset, 0)
                        for tp in probe.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)}
            except KafkaException as exc:  # a fresh group's coordinator moves or loads at first
                if exc.args[0].code() not in (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS):
                    raise
                time.sleep(0.1)
        raise AssertionError("the group's coordinator never answered")
    finally:
        probe.close()


def stored(warehouse) -> dict[str, int]:
    """Readings rows in the table, per request id."""
    return dict(warehouse.query("SELECT request_id, count() FROM readings GROUP BY request_id").rows)


def uncovered(settings, warehouse, placed) -> list[str]:
    """Requests the committed offsets cover whose rows are not (all) in the table.

    The offsets are read first: rows only ever arrive, so any such request was committed before its insert."""
    offsets = committed(settings)
    rows = stored(warehouse)
    return [request for request, (partition, offset) in placed.items()
            if offset < offsets[partition] and rows.get(request, 0) < VALUES]


def test_a_refused_insert_mid_stream_loses_duplicates_and_reorders_nothing(pipeline):
    settings, real, placed = pipeline
    ahead: list[str] = []
    # Checked before every insert (a batch committed ahead of its insert, or out of turn, shows
    # there) and between them.
    warehouse = SlowAndRefusing(real, refuse_at=3, check=lambda: ahead.extend(uncovered(settings, real, placed)))
    sink, thread = start_sink(settings, warehouse)
    try:
        def caught_up() -> bool:
            ahead.extend(uncovered(settings, real, placed))
            return sum(committed(settings).values()) == MESSAGES and len(stored(real)) == MESSAGES
        eventually(caught_up, timeout=60, interval=0.02)
    finally:
        sink.stop()
        thread.join(30)
    assert not thread.is_alive()
    assert warehouse.attempts >= MESSAGES // 5 + 1, "the batches were not small, or the refused one was not retried"
    assert ahead == [], f"offsets committed before their rows were in the table: {sorted(set(ahead))}"
    assert stored(real) == {request: VALUES for request in placed}  # every row, and once (the retry deduplicated)
    assert real.query("SELECT count(), uniqExact(request_id, metric_id) FROM readings").rows[0] == (
        MESSAGES * VALUES, MESSAGES * VALUES)


def test_stop_during_an_insert_ends_the_loop_after_it_and_commits_nothing_ahead(pipeline):
    settings, real, placed = pipeline
    warehouse = SlowAndRefusing(real, gate_at=2)
    sink, thread = start_sink(settings, warehouse)
    try:
        assert warehouse.at_gate.wait(30), "the second insert never started"
        sink.stop()
        time.sleep(0.5)
        assert thread.is_alive(), "the loop ended with an insert in flight"
        warehouse.gate.set()
        thread.join(30)
        assert not thread.is_alive() and warehouse.past_gate.is_set()
    finally:
        warehouse.gate.set()
        sink.stop()
        thread.join(30)
    offsets, rows = committed(settings), stored(real)
    covered = {request for request, (partition, offset) in placed.items() if offset < offsets[partition]}
    assert covered and covered <= set(rows)  # the first batch committed; nothing committed that is not stored
    assert all(count == VALUES for count in rows.values())


class Recording:
    """A warehouse (or a wrapper of one), noting the request ids of every readings insert it is asked for."""

    def __init__(self, warehouse) -> None:
        self._warehouse = warehouse
        self.requests: set[str] = set()

    def insert(self, table, columns, dedup_token=None) -> None:
        if table == "readings":
            self.requests.update(columns["request_id"].to_pylist())
        self._warehouse.insert(table, columns, dedup_token)

    def __getattr__(self, name):
        return getattr(self._warehouse, name)


def test_a_revocation_lets_the_insert_under_way_finish_and_commits_it_before_the_partitions_go(pipeline):
    """A second member joins while the first is in the middle of an insert: the partitions the
    first gives up are handed over only once that insert is in and committed (with the batch it
    was filling), so the second member starts past them and inserts none of them again."""
    settings, real, placed = pipeline
    gated = SlowAndRefusing(real, gate_at=2)
    first_warehouse, second_warehouse = Recording(gated), Recording(real)
    first, first_thread = start_sink(settings, first_warehouse)
    second = second_thread = None
    try:
        assert gated.at_gate.wait(30), "the second insert never started"
        second, second_thread = start_sink(settings, second_warehouse)
        time.sleep(4)  # the group rebalances meanwhile; the first holds the revocation
        assert not second_warehouse.requests, "partitions handed over with an insert under way"
        gated.gate.set()
        assert second.ready.wait(30)
        eventually(lambda: len(stored(real)) == MESSAGES, timeout=60, interval=0.1)
        eventually(lambda: sum(committed(settings).values()) == MESSAGES, timeout=30, interval=0.2)
    finally:
        gated.gate.set()
        stop_sinks((first, first_thread), (second, second_thread))
    assert second_warehouse.requests, "the second member got no partition"
    assert not first_warehouse.requests & second_warehouse.requests, "inserted by both members"
    assert stored(real) == {request: VALUES for request in placed}


class RefusingUntilOpen:
    """The real warehouse, refusing every readings insert after the first until `open` is set."""

    def __init__(self, warehouse) -> None:
        self._warehouse = warehouse
        self.open, self.refusing = threading.Event(), threading.Event()
        self.attempts = 0

    def insert(self, table, columns, dedup_token=None) -> None:
        if table == "readings":
            self.attempts += 1
            if self.attempts > 1 and not self.open.is_set():
                self.refusing.set()
                raise WarehouseUnavailable("refused (test)")
        self._warehouse.insert(table, columns, dedup_token)

    def __getattr__(self, name):
        return getattr(self._warehouse, name)


def test_partitions_handed_back_while_the_sink_waits_out_a_failure_lose_nothing(pipeline):
    """A second member takes partitions and leaves while the first retries a refused insert;
    the partitions come back to the first in the middle of its wait, with new messages in them."""
    settings, real, placed = pipeline
    warehouse = RefusingUntilOpen(real)
    first, first_thread = start_sink(settings, warehouse)
    second = second_thread = None
    try:
        assert warehouse.refusing.wait(30)
        second, second_thread = start_sink(settings, real)
        assert second.ready.wait(30), "the second member got no partitions"
        eventually(lambda: second.rows_inserted > 0, timeout=30)
        second.stop()
        second_thread.join(30)
        topic = schemas.Topics(settings.topic_prefix).frames
        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
        for i in range(MESSAGES, MESSAGES + 30):
            request = f"req_{i:04d}"
            producer.produce(topic, key=f"thg_{i % 7}".encode(), value=frames.encode(frame_batch(i, request)),
                             on_delivery=lambda err, m, r=request: placed.__setitem__(r, (m.partition(), m.offset())))
            time.sleep(0.05)  # spread over the first member's wait
        assert producer.flush(30) == 0
        time.sleep(3)
        warehouse.open.set()
        deadline = time.monotonic() + 60
        while len(stored(real)) < len(placed) and time.monotonic() < deadline:
            time.sleep(0.2)
        missing = sorted(set(placed) - set(stored(real)))
        assert not missing, f"{len(missing)} messages never inserted: {missing}"
        eventually(lambda: sum(committed(settings).values()) == len(placed), timeout=30, interval=0.2)
    finally:
        warehouse.open.set()
        stop_sinks((first, first_thread), (second, second_thread))
    assert stored(real) == {request: VALUES for request in placed}


class Noting:
    """The real warehouse, noting when each readings insert came and how many rows it had."""

    def __init__(self, warehouse) -> None:
        self._warehouse = warehouse
        self.at: list[float] = []
        self.rows: list[int] = []

    def insert(self, table, columns, dedup_token=None) -> None:
        if table == "readings":
            self.at.append(time.monotonic())
            self.rows.append(len(next(iter(columns.values()))))
        self._warehouse.insert(table, columns, dedup_token)

    def __getattr__(self, name):
        return getattr(self._warehouse, name)


def written_long_ago(kafka_bootstrap, tmp_path, requests: list[str], **overrides):
    """Settings, a producer and a migrated warehouse, with a one-partition frames topic holding
    one FrameBatch per request, each stamped 30 s ago."""
    from warehouse import open_warehouse

    settings = session_settings(kafka_bootstrap, tmp_path, **overrides)
    topic = schemas.Topics(settings.topic_prefix).frames
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    written = int(time.time() * 1000) - 30_000
    for i, request in enumerate(requests):
        producer.produce(topic, key=b"thg_0", value=frames.encode(frame_batch(i, request)), timestamp=written)
    assert producer.flush(30) == 0
    warehouse = open_warehouse(settings)
    warehouse.migrate()
    return settings, producer, warehouse


def test_a_batch_window_counts_from_when_its_first_message_was_written(kafka_bootstrap, tmp_path):
    """Messages written long ago (they waited out an insert, or a restart) are inserted at once,
    not a whole window after the sink first saw them; a message written now still gets its window."""
    window_s = 8.0
    settings, producer, real = written_long_ago(kafka_bootstrap, tmp_path, [f"old_{i}" for i in range(10)],
                                                sink_batch_messages=1000, sink_batch_ms=int(window_s * 1000))
    topic = schemas.Topics(settings.topic_prefix).frames
    warehouse = Noting(real)
    sink, thread = start_sink(settings, warehouse)
    try:
        assert sink.ready.wait(30)
        assigned = time.monotonic()
        eventually(lambda: len(stored(real)) == 10, timeout=window_s / 2, interval=0.05)
        assert warehouse.at[0] - assigned < window_s / 2
        producer.produce(topic, key=b"thg_0", value=frames.encode(frame_batch(10, "new_10")))
        assert producer.flush(30) == 0
        produced = time.monotonic()
        eventually(lambda: "new_10" in stored(real), timeout=window_s * 3, interval=0.05)
        assert warehouse.at[-1] - produced > window_s * 0.75  # a fresh message's batch still waits its window
    finally:
        sink.stop()
        thread.join(30)
        real.close()


def test_a_fetched_backlog_is_cut_into_batches_within_the_byte_limit(kafka_bootstrap, tmp_path):
    """A backlog librdkafka has already fetched comes out of consume() all at once if asked for:
    the batch must still stop near its byte limit (memory, and a batch size that does not swing
    with timing), and every message must land once."""
    message_bytes = len(frames.encode(frame_batch(0, "req_0000")))
    per_batch = 10
    # Written long ago, a backlog: its batches close once what is already fetched is in.
    settings, _, real = written_long_ago(kafka_bootstrap, tmp_path, [f"req_{i:04d}" for i in range(MESSAGES)],
                                         sink_batch_messages=1000, sink_batch_bytes=per_batch * message_bytes,
                                         sink_batch_ms=2000)
    warehouse = Noting(real)
    sink, thread = start_sink(settings, warehouse)
    try:
        eventually(lambda: sum(stored(real).values()) == MESSAGES * VALUES, timeout=30, interval=0.05)
        assert set(stored(real).values()) == {VALUES}
        assert sum(warehouse.rows) == MESSAGES * VALUES
        assert max(warehouse.rows) <= (per_batch + 1) * VALUES, warehouse.rows
    finally:
        sink.stop()
        thread.join(30)
        real.close()
