"""Nothing lost, nothing duplicated: crash the processor and the sink (SIGKILL,
between consume and commit) while requests stream in, then count rows."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest

from tests.conftest import eventually, session_settings, stack_with_battery
from tests.warehouse_probe import optimized

REQUESTS = 300
METRICS = 5  # every request carries one frame of five readings


@pytest.fixture()
def faulty(kafka_bootstrap, tmp_path):
    """A stack of its own (small batches, so a crash always leaves work uncommitted)."""
    with stack_with_battery(session_settings(kafka_bootstrap, tmp_path, processor_batch=10, sink_batch_messages=20,
                                             rate_limit=0.0)) as running:
        yield running


def send_all(url: str, key: str, thing: str, progress: list[int]) -> None:
    """Send every request, retrying each until a 202, as a client must after a 5xx or a dropped connection."""
    with httpx.Client(base_url=url, headers={"X-Api-Key": key}, timeout=10) as client:
        for i in range(REQUESTS):
            body = {"frames": [{"timestamp": 1718884800000 + i * 1000, "metrics": {
                "status": i, "moduleSoC": i / 10, "moduleSoH": 99.0, "moduleVoltage": 52.0, "moduleCurrent": 1.5}}]}
            while True:
                try:
                    if client.post(f"/v2/thing/{thing}/data", json=body).status_code == 202:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            progress.append(i)


def count(api, stack, thing: str, logical: bool) -> int:
    inner = f"SELECT 1 FROM {stack.settings.database}.readings WHERE thing_id = '{thing}'"
    if logical:  # the documented FINAL-free pattern: the latest version of each reading
        inner += " ORDER BY version DESC LIMIT 1 BY thing_id, metric_id, ts"
    reply = api.post("/v2/admin/sql", json={"sql": f"SELECT count() FROM ({inner})"})
    assert reply.status_code == 200, reply.text
    return reply.json()["rows"][0][0]


def frames_messages(stack) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": stack.settings.kafka_bootstrap, "group.id": "probe"})
    topic = stack.settings.topic_prefix + "frames"
    try:
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in range(stack.settings.partitions))
    finally:
        consumer.close()


@pytest.mark.parametrize("victim", ["processor", "edge"])  # the edge hosts the embedded sink
def test_crash_between_consume_and_commit_loses_and_duplicates_nothing(faulty, victim):
    stack, api, thing = faulty
    progress: list[int] = []
    sender = threading.Thread(target=send_all, args=(stack.url, stack.settings.admin_key, thing, progress))
    sender.start()
    eventually(lambda: len(progress) >= REQUESTS // 3, timeout=60)
    stack.restart(victim, signal.SIGKILL)
    sender.join(120)
    assert len(progress) == REQUESTS

    expected = REQUESTS * METRICS
    eventually(lambda: count(api, stack, thing, logical=True) == expected, timeout=90, interval=0.5)
    physical = count(api, stack, thing, logical=False)
    print(f"{victim} crash: {physical} physical rows, {frames_messages(stack)} frames messages "
          f"for {expected} readings in {REQUESTS} requests")
    time.sleep(2)  # nothing more trickles in later either
    assert count(api, stack, thing, logical=True) == expected
    stack.stop()  # chDB has one owner: the warehouse is read directly once the stack is down
    assert optimized(stack.settings, thing) == (expected, expected)  # merged, no copy is left over
