"""A sink's chain without services (sinks.chain): batches close by count, bytes or a window from
when their first message was written; the dedup token names offsets only; a busy insert step
refuses messages (arroyo's MessageRejected) instead of piling batches up; offsets are committed
only after their batch is inserted, in order; a join lets the insert under way finish, and an
insert abandoned at a join commits nothing."""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from arroyo.processing.strategies import MessageRejected
from arroyo.types import BrokerValue, Message, Partition, Topic

from sinks.batches import dedup_token
from sinks.chain import SinkChain, SinkPolicy
from sinks.inserting import InsertAbandoned, Inserting, name_thread

P0, P1 = Partition(Topic("frames"), 0), Partition(Topic("frames"), 1)


def message(offset: int, value: bytes = b"x", partition: Partition = P0, age_s: float = 0.0) -> Message[bytes]:
    written = datetime.now(timezone.utc) - timedelta(seconds=age_s)
    return Message(BrokerValue(value, partition, offset, written))


class Recorder:
    """An insert and a commit that note what they got, in order."""

    def __init__(self, gate: threading.Event | None = None, refuse: int = 0) -> None:
        self.events: list[tuple] = []
        self.gate, self.refuse = gate, refuse
        self.started = threading.Event()

    def insert(self, values: list, token: str) -> int:
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.refuse:
            self.refuse -= 1
            raise RuntimeError("refused (test)")
        self.events.append(("insert", tuple(values), token))
        return len(values)

    def commit(self, offsets, force: bool = False) -> None:
        if offsets:
            self.events.append(("commit", dict(offsets)))


def chain(recorder: Recorder, **limits):
    policy = SinkPolicy(**{"max_messages": 3, "max_bytes": 1 << 20, "window_s": 60.0, **limits})
    inserting = Inserting(recorder.insert, "test-chain")
    return SinkChain(policy, inserting).create_with_partitions(recorder.commit, {}), inserting


def settle(strategy, until, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:
        strategy.poll()
        time.sleep(0.005)
    assert until()


def test_a_batch_closes_at_its_message_count_and_is_committed_after_its_insert():
    recorder = Recorder()
    strategy, _ = chain(recorder)
    for offset in range(3):
        strategy.submit(message(offset, b"v%d" % offset))
    settle(strategy, lambda: len(recorder.events) == 2)
    assert recorder.events == [("insert", (b"v0", b"v1", b"v2"), dedup_token({P0: [0, 2]})), ("commit", {P0: 3})]


def test_a_batch_closes_at_its_byte_limit():
    recorder = Recorder()
    strategy, _ = chain(recorder, max_messages=100, max_bytes=10)
    for offset in range(4):
        strategy.submit(message(offset, b"12345"))
    settle(strategy, lambda: len(recorder.events) == 4)
    assert [e[1] for e in recorder.events if e[0] == "insert"] == [(b"12345", b"12345")] * 2


def test_the_window_counts_from_when_the_first_message_was_written():
    recorder = Recorder()
    strategy, _ = chain(recorder, max_messages=100, window_s=5.0)
    strategy.submit(message(0, age_s=30))  # written long ago: its window is over
    settle(strategy, lambda: len(recorder.events) == 2, timeout=1)
    strategy.submit(message(1))  # written now: it waits its window
    for _ in range(20):
        strategy.poll()
        time.sleep(0.01)
    assert len(recorder.events) == 2


def test_the_dedup_token_names_offsets_only():
    assert dedup_token({P0: [0, 2], P1: [5, 5]}) == dedup_token({P1: [5, 5], P0: [0, 2]})
    assert dedup_token({P0: [0, 2]}) != dedup_token({P0: [0, 3]})
    first, second = Recorder(), Recorder()
    for recorder, values in ((first, b"a"), (second, b"b")):  # the same offsets, other bytes
        strategy, _ = chain(recorder, max_messages=1)
        strategy.submit(message(7, values))
        settle(strategy, lambda: recorder.events)
    assert first.events[0][2] == second.events[0][2]


def test_a_busy_insert_step_refuses_messages_and_a_join_lets_it_finish():
    gate = threading.Event()
    recorder = Recorder(gate=gate)
    strategy, _ = chain(recorder, max_messages=1)
    strategy.submit(message(0))
    settle(strategy, recorder.started.is_set)  # the first insert is under way, held at the gate
    strategy.submit(message(1))  # the second batch closes, and waits for room
    strategy.poll()
    with pytest.raises(MessageRejected):
        strategy.submit(message(2))
    assert recorder.events == []  # nothing committed ahead of its insert
    strategy.close()
    threading.Timer(0.2, gate.set).start()
    strategy.join()
    assert [e[0] for e in recorder.events] == ["insert", "commit", "insert", "commit"]
    assert recorder.events[1] == ("commit", {P0: 1}) and recorder.events[3] == ("commit", {P0: 2})


def test_a_refused_insert_is_retried_and_one_abandoned_at_a_join_commits_nothing():
    recorder = Recorder(refuse=1)
    strategy, inserting = chain(recorder, max_messages=1)
    strategy.submit(message(0))
    settle(strategy, lambda: len(recorder.events) == 2)  # refused once, retried after 0.2 s
    assert recorder.events[1] == ("commit", {P0: 1}) and inserting.failing == ""

    recorder.refuse = 100
    strategy.submit(message(1, partition=P1))
    settle(strategy, lambda: inserting.failing != "")
    inserting.closing.set()  # what a revocation or stop() does before it joins
    strategy.close()
    with pytest.raises(InsertAbandoned):
        strategy.join()
    strategy.terminate()
    assert [e for e in recorder.events if e[0] == "commit"] == [("commit", {P0: 1})]


def test_a_sink_thread_is_named_for_the_os_and_the_process_is_not_renamed():
    """Per-thread CPU (`top -H`, the bench) tells a sink from the HTTP edge it shares a process with by the
    thread's OS name; the process keeps its own name and environment (what `ps` and /proc show)."""
    before = (Path("/proc/self/comm").read_text(), Path("/proc/self/environ").read_bytes())
    named = {}

    def run() -> None:
        name_thread("sink-readings-and-more")
        named["comm"] = Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    name_thread("not the main thread's")  # the main thread's name is the process's: left alone
    assert named["comm"] == "sink-readings-a"  # the OS keeps 15 bytes
    assert (Path("/proc/self/comm").read_text(), Path("/proc/self/environ").read_bytes()) == before
    assert f"PATH={os.environ['PATH']}".encode() in before[1].split(b"\0")
