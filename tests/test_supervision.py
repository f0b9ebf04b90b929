"""The stack heals itself: SIGKILL the broker under load, or a service, and let the
supervisor (the one `sluice up` uses) bring it back with no manual step; every
accepted reading then lands exactly once. And a crash loop is reported, not hidden."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import eventually, session_settings
from tests.warehouse_probe import optimized
from tests.kafka_fixture import free_http_and_kafka_ports
from tests.seed import register_battery, register_battery_type

REQUESTS = 150
SENDERS = 3  # each sends its own REQUESTS // SENDERS frames, so requests are in flight when the broker dies
METRICS = 5
DELIVERY_LIMIT_S = 10  # the edge's delivery timeout: the longest a client waits for its answer
ROOT = Path(__file__).resolve().parent.parent


class Load:
    """Client threads that send every request until it is accepted (202), as a client must after a 5xx."""

    def __init__(self, url: str, key: str, thing: str) -> None:
        self.url, self.key, self.thing = url, key, thing
        self.accepted: list[int] = []
        self.refusals: list[tuple[int, str | None]] = []  # (status, Retry-After) of every 429/503
        self.longest_wait = 0.0
        self._threads = [threading.Thread(target=self._send, args=(range(i, REQUESTS, SENDERS),))
                         for i in range(SENDERS)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self, timeout: float) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def _send(self, numbers: range) -> None:
        with httpx.Client(base_url=self.url, headers={"X-Api-Key": self.key}, timeout=30) as client:
            for i in numbers:
                body = {"frames": [{"timestamp": 1718884800000 + i * 1000, "metrics": {
                    "status": i, "moduleSoC": i / 10, "moduleSoH": 99.0, "moduleVoltage": 52.0,
                    "moduleCurrent": 1.5}}]}
                while True:
                    started = time.monotonic()
                    try:
                        reply = client.post(f"/v2/thing/{self.thing}/data", json=body)
                    except httpx.TransportError:  # the edge itself is restarting
                        time.sleep(0.2)
                        continue
                    self.longest_wait = max(self.longest_wait, time.monotonic() - started)
                    if reply.status_code == 202:
                        break
                    assert reply.status_code in (429, 503), reply.text
                    self.refusals.append((reply.status_code, reply.headers.get("Retry-After")))
                    time.sleep(min(float(reply.headers.get("Retry-After") or 1), 1))
                self.accepted.append(i)


def readings(api: httpx.Client, stack, thing: str) -> tuple[int, int]:
    """(logical, physical) readings of `thing`; logical is the documented FINAL-free pattern."""
    table = f"{stack.settings.database}.readings"
    sql = (f"SELECT (SELECT count() FROM (SELECT 1 FROM {table} WHERE thing_id = '{thing}' "
           f"ORDER BY version DESC LIMIT 1 BY thing_id, metric_id, ts)), "
           f"(SELECT count() FROM {table} WHERE thing_id = '{thing}')")
    reply = api.post("/v2/admin/sql", json={"sql": sql})
    assert reply.status_code == 200, reply.text
    return tuple(reply.json()["rows"][0])


def status(stack) -> dict:
    return json.loads((stack.settings.state_dir / "run" / "status.json").read_text())["children"]


def ready(url: str) -> int:
    try:
        return httpx.get(f"{url}/readyz", timeout=3).status_code
    except httpx.HTTPError:
        return 0


def ready_again(url: str, timeout: float) -> None:
    """Wait for /readyz 200; fail naming the components that are not ok."""
    deadline, body = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            reply = httpx.get(f"{url}/readyz", timeout=3)
            if reply.status_code == 200:
                return
            body = reply.json()
        except httpx.HTTPError as exc:
            body = repr(exc)
        time.sleep(0.5)
    pytest.fail(f"not ready within {timeout} s: {body}")


def start_stack(settings):
    from sluice.stack import Stack

    stack = Stack(settings)
    stack.start()
    stack.supervise_in_background()
    api = httpx.Client(base_url=stack.url, headers={"X-Api-Key": stack.settings.admin_key}, timeout=30)
    stack.battery_type = register_battery_type(api)
    return stack, api, register_battery(api, *stack.battery_type)


def test_broker_sigkill_under_load_heals_without_a_manual_step(tmp_path):
    http_port, kafka_port = free_http_and_kafka_ports()
    # A first restart 10 s after a death keeps the broker away long enough to be a real outage.
    settings = session_settings("", tmp_path, http_port=http_port, local_kafka_port=kafka_port,
                                processor_batch=10, sink_batch_messages=20, rate_limit=0.0, restart_backoff_s=10.0)
    stack, api, thing = start_stack(settings)
    try:
        load = Load(stack.url, stack.settings.admin_key, thing)
        load.start()
        eventually(lambda: len(load.accepted) >= REQUESTS // 3, timeout=60)
        killed = time.monotonic()
        os.kill(stack.broker.pid, signal.SIGKILL)
        eventually(lambda: ready(stack.url) == 503, timeout=10, interval=0.1)
        body = httpx.get(f"{stack.url}/readyz", timeout=5).json()
        assert not body["components"]["broker"]["ok"], body
        eventually(lambda: status(stack)["broker"]["restarts"] == 1 and stack.broker.running, timeout=60)
        broker_back = time.monotonic()
        ready_again(stack.url, timeout=90)
        healed = time.monotonic()
        load.join(120)
        assert len(load.accepted) == REQUESTS

        expected = REQUESTS * METRICS
        eventually(lambda: readings(api, stack, thing)[0] == expected, timeout=90, interval=0.5)
        logical, physical = readings(api, stack, thing)
        print(f"\nbroker dead {broker_back - killed:.1f} s, edge ready again after {healed - killed:.1f} s; "
              f"{len(load.refusals)} refusals {sorted(set(s for s, _ in load.refusals))}, longest wait "
              f"{load.longest_wait:.1f} s; restarts {({n: c['restarts'] for n, c in status(stack).items()})}; "
              f"{physical} physical rows for {expected} readings")
        assert broker_back - killed >= 10
        assert load.refusals and all(retry for _, retry in load.refusals), "clients saw the outage as 429/503"
        assert load.longest_wait <= DELIVERY_LIMIT_S + 2
        time.sleep(2)
        assert readings(api, stack, thing)[0] == expected  # nothing trickles in later
    finally:
        api.close()
        stack.stop()
    assert optimized(stack.settings, thing) == (expected, expected)


@pytest.fixture()
def supervised(kafka_bootstrap, tmp_path):
    stack, api, thing = start_stack(session_settings(kafka_bootstrap, tmp_path, processor_batch=10,
                                                     sink_batch_messages=20, rate_limit=0.0))
    try:
        yield stack, api, thing
    finally:
        api.close()
        stack.stop()


def test_killed_processor_and_edge_are_restarted_by_the_supervisor(supervised):
    stack, api, thing = supervised
    probe = register_battery(api, *stack.battery_type)  # sync requests, to time the restarted processor
    load = Load(stack.url, stack.settings.admin_key, thing)
    load.start()
    for victim, after in (("processor", REQUESTS // 4), ("edge", REQUESTS // 2)):  # the edge hosts the sink
        eventually(lambda: len(load.accepted) >= after, timeout=90)
        killed = time.monotonic()
        os.kill(next(c for c in stack.children if c.name == victim).process.pid, signal.SIGKILL)
        eventually(lambda: status(stack)[victim]["restarts"] == 1 and status(stack)[victim]["state"] == "running",
                   timeout=30)
        restarted = time.monotonic()
        assert "SIGKILL" in status(stack)[victim]["last_exit"]
        if victim == "processor":
            body = {"frames": [{"timestamp": 1718884800000, "metrics": {"status": 1}}]}
            eventually(lambda: api.post(f"/v2/thing/{probe}/data", json=body, headers={"Prefer": "wait=20"},
                                        timeout=30).status_code == 200, timeout=60, interval=0)
            print(f"\nthe restarted processor answers {time.monotonic() - restarted:.1f} s after its restart "
                  f"({time.monotonic() - killed:.1f} s after the kill)")
    load.join(120)
    assert len(load.accepted) == REQUESTS

    expected = REQUESTS * METRICS
    started = time.monotonic()
    eventually(lambda: ready(stack.url) == 200 and readings(api, stack, thing)[0] == expected, timeout=90,
               interval=0.5)
    print(f"\nall readings visible {time.monotonic() - started:.1f} s after the last request; "
          f"{readings(api, stack, thing)[1]} physical rows for {expected} readings")
    settings = stack.settings
    stack.stop()
    assert optimized(settings, thing) == (expected, expected)


def test_a_crash_loop_is_given_up_and_reported(tmp_path, caplog):
    from sluice.supervisor import RestartPolicy, Supervisor, Watched

    spawned: list[tuple[float, subprocess.Popen]] = []

    def spawn() -> None:
        spawned.append((time.monotonic(), subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])))

    spawn()
    supervisor = Supervisor(RestartPolicy(backoff_s=0.2, max_backoff_s=5, crash_loop_restarts=3,
                                          crash_loop_window_s=60), status_path=tmp_path / "status.json")
    supervisor.watch(Watched("flaky", alive=lambda: spawned[-1][1].poll() is None, restart=spawn,
                             describe_exit=lambda: f"exited with code {spawned[-1][1].poll()}"))
    eventually(lambda: supervisor.check(), timeout=20, interval=0.05)

    assert len(spawned) == 4  # the first start and three restarts, then no more
    gaps = [b[0] - a[0] for a, b in zip(spawned, spawned[1:])]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4 and gaps[2] >= 0.8, gaps  # exponential backoff
    reported = json.loads((tmp_path / "status.json").read_text())["children"]["flaky"]
    assert reported["state"] == "failed" and reported["restarts"] == 3 and "code 3" in reported["last_exit"]
    assert any("CRASH LOOP" in r.message and "flaky" in r.message for r in caplog.records)
    time.sleep(1)
    supervisor.check()
    assert len(spawned) == 4


def test_sluice_up_exits_non_zero_when_a_child_crash_loops(tmp_path):
    from tests.test_sluice_up import Up, processes_of

    http_port, kafka_port = free_http_and_kafka_ports()
    state = tmp_path / "state"
    os.environ.update(SLUICE_CRASH_LOOP_RESTARTS="2", SLUICE_RESTART_BACKOFF_S="0.2")
    try:
        up = Up(state, http_port, kafka_port)
    finally:
        del os.environ["SLUICE_CRASH_LOOP_RESTARTS"], os.environ["SLUICE_RESTART_BACKOFF_S"]
    try:
        eventually(lambda: "sluice is up." in Path(up.log.name).read_text(), timeout=120, interval=0.5)
        killed: set[int] = set()
        deadline = time.monotonic() + 60
        while up.process.poll() is None and time.monotonic() < deadline:  # the processor dies at every start
            processor = json.loads((state / "run" / "status.json").read_text())["children"]["processor"]
            if processor["pid"] and processor["pid"] not in killed:
                killed.add(processor["pid"])
                os.kill(processor["pid"], signal.SIGKILL)
            time.sleep(0.05)
        assert up.process.wait(60) == 1
    finally:
        if up.process.poll() is None:
            up.stop(signal.SIGTERM)
    output = Path(up.log.name).read_text()
    assert "CRASH LOOP: processor was killed by SIGKILL after 2 restarts" in output, output[-3000:]
    assert len(killed) == 3  # the first start and two restarts, each logged
    assert output.count("processor restarted (pid") == 2, output[-3000:]
    reported = json.loads((state / "run" / "status.json").read_text())["children"]["processor"]
    assert reported["state"] == "failed" and reported["restarts"] == 2
    time.sleep(0.5)
    assert processes_of(state) == [], "sluice up left processes behind"


def test_a_sink_that_stops_consuming_is_not_ready_then_fatal(kafka_bootstrap):
    """What a partition left paused after an outage looks like: the loop turns, nothing flows."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from sinks.chain import SinkPolicy
    from sinks.consumer_loop import SinkConsumer

    topic = f"stuck-{os.getpid()}-{time.monotonic_ns()}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result()
    class LeftPaused(SinkConsumer):
        pause = threading.Event()

        def _consume(self, timeout):
            if self.pause.is_set():  # the consumer is not safe to pause from another thread
                self._consumer.pause(self._consumer.assignment())
                self.pause.clear()
            return super()._consume(timeout)

    inserted: list[bytes] = []
    sink = LeftPaused(kafka_bootstrap, topic, topic, lambda values, token: inserted.extend(values) or len(values),
                      SinkPolicy(max_messages=10, max_bytes=1 << 20, window_s=0.1), name=topic)
    sink.health.stall_after = 25.0  # past the watch's two checks, 10 s apart
    thread = threading.Thread(target=sink.run, daemon=True)
    thread.start()
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    try:
        for i in range(5):
            producer.produce(topic, value=b"%d" % i)
        producer.flush(10)
        eventually(lambda: len(inserted) == 5, timeout=30)
        assert sink.health.status()["ok"]
        sink.pause.set()  # as if left paused by a rebalance
        eventually(lambda: not sink.pause.is_set(), timeout=5, interval=0.05)
        for i in range(5):
            producer.produce(topic, value=b"%d" % i)
        producer.flush(10)
        eventually(lambda: sink.health.status()["state"] == "failing", timeout=30, interval=0.5)
        assert "5 messages waiting" in sink.health.status()["reason"]
        eventually(lambda: sink.health.status()["fatal"], timeout=30, interval=0.5)  # the watchdog's cue
    finally:
        sink.stop()
        thread.join(10)


def test_a_message_that_just_arrived_is_not_taken_for_a_stuck_sink(kafka_bootstrap):
    """The progress watch checks every 10 s once idle: a message written just before a check is
    waiting then, a fetch away from being consumed. One sighting must not fail readiness; the
    same messages still waiting at the next check, with nothing consumed between, do."""
    from confluent_kafka import Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    from sinks.chain import SinkPolicy
    from sinks.consumer_loop import SinkConsumer

    topic = f"arrived-{os.getpid()}-{time.monotonic_ns()}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})  # kept: the future needs its client
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result()
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, value=b"fresh")
    producer.flush(10)
    sink = SinkConsumer(kafka_bootstrap, topic, topic, lambda values, token: len(values),
                        SinkPolicy(max_messages=10, max_bytes=1 << 20, window_s=0.1), name=topic)
    try:
        sink._consumer.assign([TopicPartition(topic, 0)])  # owned, nothing consumed yet
        sink.watch._progress_at = time.monotonic() - 11  # idle past the check's 10 s
        sink.watch.check(sink._consumer)
        assert sink.watch.stuck == ""  # first sighting: it may just have arrived
        sink.watch._lag_check_at = 0.0  # the next check, still nothing consumed
        sink.watch.check(sink._consumer)
        assert sink.watch.stuck.startswith("1 messages waiting, none consumed")
    finally:
        sink._consumer.close()


def test_after_each_of_five_broker_restarts_a_new_reading_lands_within_30_s(tmp_path):
    """The stack is left running while its broker is SIGKILLed and restarted by the supervisor, five
    times in a row; each time one reading is sent until it is accepted, and must be in the warehouse
    within 30 s. (After a broker restart the sinks' static members could be fenced: their consumers went
    dead while the edge kept answering 202.)"""
    http_port, kafka_port = free_http_and_kafka_ports()
    settings = session_settings("", tmp_path, http_port=http_port, local_kafka_port=kafka_port,
                                rate_limit=0.0, crash_loop_restarts=20)
    stack, api, thing = start_stack(settings)
    try:
        for round_ in range(5):
            os.kill(stack.broker.pid, signal.SIGKILL)
            eventually(lambda: status(stack)["broker"]["restarts"] == round_ + 1 and stack.broker.running,
                       timeout=120, interval=0.2)
            ts = 1718884800000 + round_ * 1000
            body = {"frames": [{"timestamp": ts, "metrics": {"moduleSoC": float(round_)}}]}

            def accepted() -> str | None:
                try:
                    reply = api.post(f"/v2/thing/{thing}/data", json=body, timeout=15)
                except httpx.TransportError:
                    return None
                return reply.json()["requestId"] if reply.status_code == 202 else None

            request_id = eventually(accepted, timeout=90, interval=0.5)
            sent = time.monotonic()
            # Each sink of the edge must be consuming: readings, the ingest log, the catalog's dimensions.
            new_thing = register_battery(api, *stack.battery_type)
            db = stack.settings.database
            checks = {
                "readings": f"SELECT count() FROM {db}.readings WHERE thing_id = '{thing}' "
                            f"AND toUnixTimestamp64Milli(ts) = {ts}",
                "ingest_log": f"SELECT count() FROM {db}.ingest_log FINAL WHERE request_id = '{request_id}'",
                "things": f"SELECT count() FROM {db}.things FINAL WHERE thing_id = '{new_thing}'",
            }
            def landed(sql: str) -> bool:
                reply = api.post("/v2/admin/sql", json={"sql": sql})
                return reply.status_code == 200 and reply.json()["rows"] == [[1]]

            for name, sql in checks.items():
                eventually(lambda: landed(sql), timeout=max(1.0, 30 - (time.monotonic() - sent)), interval=0.5)
            print(f"\nrestart {round_ + 1}: reading, verdict and new thing landed {time.monotonic() - sent:.1f} s "
                  "after the 202")
    finally:
        api.close()
        stack.stop()


def test_readiness_fails_while_no_processor_takes_requests_and_recovers(supervised):
    """A processor stopped dead (SIGSTOP: alive to the supervisor, silent to Kafka) leaves the group
    after its session timeout; /readyz then says so, naming the processor, and is 200 again once it
    rejoins. (Was: /readyz stayed 200 with no processor, while sync requests timed out.)"""
    stack, api, thing = supervised
    ready_again(stack.url, timeout=60)
    processor = next(c for c in stack.children if c.name == "processor").process
    processor.send_signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        eventually(lambda: ready(stack.url) == 503, timeout=40, interval=0.5)
        noticed = time.monotonic() - stopped
        body = httpx.get(f"{stack.url}/readyz", timeout=5).json()
        assert body["components"]["processor"]["state"] == "failing", body
        assert "no processor" in body["components"]["processor"]["reason"], body
        assert body["components"]["broker"]["ok"], body  # only the processor is at fault
    finally:
        processor.send_signal(signal.SIGCONT)
    ready_again(stack.url, timeout=60)
    print(f"\n/readyz named the stopped processor after {noticed:.1f} s")


def test_a_watchdog_that_fired_exits_hard_when_the_graceful_stop_hangs(tmp_path):
    from bus.health import Health
    from bus.watchdog import EXIT_UNHEALTHY, Watchdog

    registry = Health()
    loop = registry.component("sink-readings")
    loop.ok()
    heartbeat = tmp_path / "edge.heartbeat"
    exits: list[int] = []
    asked: list[dict] = []
    watchdog = Watchdog(registry, asked.append, interval=0.05, heartbeat=heartbeat, exit_grace=0.5,
                        hard_exit=exits.append)  # on_fatal only asks: the "graceful stop" never comes
    watchdog.start()
    eventually(heartbeat.exists, timeout=5, interval=0.05)
    loop.dead("consumer gone")
    eventually(lambda: asked, timeout=5, interval=0.05)
    beaten_at = heartbeat.stat().st_mtime
    assert exits == []  # the graceful stop has its grace first
    eventually(lambda: exits == [EXIT_UNHEALTHY], timeout=5, interval=0.05)
    assert heartbeat.stat().st_mtime == beaten_at  # no beats once it fired: a supervisor sees it stale


def test_the_supervisor_kills_and_restarts_a_child_whose_heartbeat_went_stale(tmp_path):
    from sluice.supervisor import RestartPolicy, Supervisor, Watched

    heartbeat = tmp_path / "child.heartbeat"
    spawned: list[subprocess.Popen] = []

    def spawn() -> None:
        heartbeat.touch()
        # Alive to the OS, silent to its supervisor: what a process wedged in native code looks like.
        spawned.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]))

    spawn()
    supervisor = Supervisor(RestartPolicy(backoff_s=0.1, liveness_timeout_s=1.0), status_path=tmp_path / "status.json")
    supervisor.watch(Watched("wedged", alive=lambda: spawned[-1].poll() is None, restart=spawn,
                             describe_exit=lambda: f"exited with code {spawned[-1].poll()}",
                             silent_for=lambda: time.time() - heartbeat.stat().st_mtime,
                             kill=lambda: spawned[-1].kill()))
    try:
        supervisor.check()
        assert len(spawned) == 1  # its heartbeat is fresh
        time.sleep(1.2)
        eventually(lambda: supervisor.check() == [] and len(spawned) == 2, timeout=10, interval=0.05)
        assert spawned[0].poll() == -signal.SIGKILL
        reported = json.loads((tmp_path / "status.json").read_text())["children"]["wedged"]
        assert "no heartbeat" in reported["last_exit"] and reported["restarts"] == 1, reported
    finally:
        for process in spawned:
            process.kill()
            process.wait()


def test_a_wedged_processor_is_killed_and_restarted_by_sluice_ups_supervisor(kafka_bootstrap, tmp_path):
    """SIGSTOP: the process exists, so its exit code says nothing; its heartbeat stops, and the
    supervisor kills and restarts it within the liveness timeout."""
    stack, api, thing = start_stack(session_settings(kafka_bootstrap, tmp_path, rate_limit=0.0,
                                                     liveness_timeout_s=5.0))
    try:
        processor = next(c for c in stack.children if c.name == "processor").process
        eventually(lambda: (stack.settings.state_dir / "run" / "processor.heartbeat").exists(), timeout=30)
        processor.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        eventually(lambda: status(stack)["processor"]["restarts"] == 1, timeout=30, interval=0.2)
        restarted = time.monotonic() - stopped
        assert "no heartbeat" in status(stack)["processor"]["last_exit"], status(stack)["processor"]
        assert processor.wait(5) == -signal.SIGKILL
        body = {"frames": [{"timestamp": 1718884800000, "metrics": {"moduleSoC": 1.0}}]}
        eventually(lambda: api.post(f"/v2/thing/{thing}/data", json=body, headers={"Prefer": "wait=20"},
                                    timeout=30).status_code == 200, timeout=90, interval=0.5)
        print(f"\nthe wedged processor was killed and restarted {restarted:.1f} s after it stopped")
    finally:
        api.close()
        stack.stop()
