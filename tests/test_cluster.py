"""A three-node local Kafka cluster (`sluice up --brokers 3`) under a steady load, with two edges and
two processors: the broker leading the raw topic SIGKILLed, the active KRaft controller SIGKILLed, a
rolling restart, two brokers down at once, and an edge and a processor SIGKILLed.

While one broker of three is away clients see no error at all; while two are, a 503 with Retry-After
(never a 202 for a write that is not durable: min.insync.replicas 2 with acks=all); and every
accepted reading lands exactly once: count() = uniqExact = accepted, read with FINAL after each
test and after OPTIMIZE … FINAL once the stack has stopped.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from confluent_kafka import KafkaException

from bus.cluster import describe
from tests.conftest import eventually, session_settings
from tests.kafka_fixture import free_port, free_port_run
from tests.seed import register_battery, register_battery_type
from tests.steady_load import METRICS, SteadyLoad
from tests.warehouse_probe import optimized

BROKERS = 3
RATE = 250  # requests/s offered, spread over both edges
WARM_UP_S = 10
DOWN_S = 25  # how long the raw topic's leader stays down after its SIGKILL (sluice status looks meanwhile)


@dataclasses.dataclass
class Cluster:
    stack: object
    api: httpx.Client
    edges: list[str]  # the primary edge, and a second one on a port of its own
    battery_type: tuple[str, str]
    landed: list[tuple[str, int]] = dataclasses.field(default_factory=list)  # (thing, readings): checked at the end

    def load(self, rate: float = RATE) -> tuple[str, SteadyLoad]:
        """A new thing, and a steady load of requests for it over both edges, running (its first 500
        requests accepted)."""
        thing = register_battery(self.api, *self.battery_type)
        load = SteadyLoad(self.edges, self.stack.settings.admin_key, thing, rate=rate).start()
        load.wait_accepted(500)
        return thing, load

    def finish(self, load: SteadyLoad, what: str) -> None:
        """Let the load run a moment past the recovery and catch up with its schedule, stop it, and print
        what happened with its figures."""
        time.sleep(2)
        load.wait_caught_up()
        load.stop()
        print(f"\n{what}; {load.summary()}")

    def unnoticed(self, thing: str, load: SteadyLoad, what: str) -> None:
        """Finish the load (`finish`); no client saw the fault, and every reading landed once."""
        self.finish(load, what)
        no_client_noticed(self.stack, load)
        print(self.landed_once(thing, load))

    def readings(self, thing: str) -> tuple[int, int, int]:
        """(count() FINAL, uniqExact(metric, ts), physical rows) of `thing`'s readings."""
        table = f"{self.stack.settings.database}.readings"
        sql = (f"SELECT (SELECT count() FROM {table} FINAL WHERE thing_id = '{thing}'), "
               f"(SELECT uniqExact(metric_id, ts) FROM {table} WHERE thing_id = '{thing}'), "
               f"(SELECT count() FROM {table} WHERE thing_id = '{thing}')")
        try:
            reply = self.api.post("/v2/admin/sql", json={"sql": sql})
        except httpx.TransportError:  # the primary edge is restarting
            return (-1, -1, -1)
        return tuple(reply.json()["rows"][0]) if reply.status_code == 200 else (-1, -1, -1)

    def landed_once(self, thing: str, load: SteadyLoad, timeout: float = 90) -> str:
        """Wait until every accepted reading of `thing` is in the warehouse exactly once; describe it."""
        expected = len(set(load.accepted)) * METRICS
        started = time.monotonic()
        eventually(lambda: self.readings(thing)[:2] == (expected, expected), timeout=timeout, interval=0.5)
        self.landed.append((thing, expected))
        physical = self.readings(thing)[2]
        return (f"{expected} readings landed once (count FINAL = uniqExact), {physical} physical rows, "
                f"all visible {time.monotonic() - started:.1f} s after the load stopped")


def back_in_sync(stack, node_id: int, killed_pid: int) -> bool:
    """The node runs again (a new JVM), serves, and sees every replica in sync. (Asked elsewhere, a
    cluster that has not fenced the dead node yet still counts its replicas in sync.)"""
    node = stack.kafka.node(node_id)
    return node.running and node.pid != killed_pid and in_sync(stack, node.bootstrap)


def in_sync(stack, bootstrap: str | None = None) -> bool:
    """Every broker up, and every replica of Sluice's topics and the consumer offsets in sync."""
    try:
        view = describe(bootstrap or stack.settings.kafka_bootstrap, stack.settings.topic_prefix, timeout=3)
    except KafkaException:
        return False
    return len(view.brokers) == BROKERS and view.in_sync


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from sluice.stack import Stack

    settings = session_settings("", tmp_path_factory.mktemp("cluster"), brokers=BROKERS,
                                local_kafka_port=free_port_run(2 * BROKERS), rate_limit=0.0, crash_loop_restarts=20)
    stack = Stack(settings)
    started = time.monotonic()
    stack.start()
    stack.supervise_in_background()
    second_edge = free_port()
    stack.add("processor", "processor-2")
    stack.add("edge-worker", "edge-b", http_port=second_edge)
    edges = [stack.url, f"http://{settings.http_host}:{second_edge}"]
    api = httpx.Client(base_url=stack.url, headers={"X-Api-Key": stack.settings.admin_key}, timeout=30)
    try:
        eventually(lambda: ready(edges[1]) and in_sync(stack), timeout=120, interval=0.5)
        print(f"\n{BROKERS} brokers, two edges and two processors ready in {time.monotonic() - started:.1f} s")
        running = Cluster(stack, api, edges, register_battery_type(api))
        _, warm_up = running.load()  # freshly started JVMs and processes answer slowly at first
        time.sleep(WARM_UP_S)
        warm_up.stop()
        print(f"warm-up: {warm_up.summary()}")
        yield running
    finally:
        api.close()
        stack.stop()
    for thing, expected in running.landed:  # the rows themselves, merged: nothing twice, nothing missing
        assert optimized(stack.settings, thing) == (expected, expected), thing


def sluice_status(stack) -> dict[str, str]:
    """`sluice status --once`'s rows by their first cell, as a second terminal shows them."""
    out = subprocess.run([sys.executable, "-m", "sluice.cli", "status", "--once", "--interval", "0.5"],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, **stack.settings.to_env(), "COLUMNS": "250"})
    assert out.returncode == 0, out.stdout + out.stderr
    return {line.split("│")[1].strip(): line for line in out.stdout.splitlines()
            if line.count("│") >= 4 and line.split("│")[1].strip()}


def stages_restarted(stack) -> dict[str, int]:
    """Restarts of every child but the brokers (a broker's failure must not take a client down with it)."""
    return {name: child.restarts for name, child in stack.supervisor.children.items()
            if not name.startswith("broker") and child.restarts}


def no_client_noticed(stack, load: SteadyLoad) -> None:
    assert not load.refusals and not load.unanswered and not load.given_up, load.summary()
    assert load.achieved_rate >= 200, load.summary()
    assert stages_restarted(stack) == {}


def test_sluice_status_shows_the_brokers_the_controller_and_partitions_out_of_sync(cluster):
    rows = sluice_status(cluster.stack)
    controller = cluster.stack.kafka.active_controller()
    assert "3 of 3 up" in rows["brokers"], rows
    assert f"node {controller}" in rows["controller"], rows
    assert "0 partitions" in rows["under-replicated"] and "0 partitions" in rows["offline"], rows


def test_sigkill_of_the_broker_leading_the_raw_topic_costs_clients_nothing(cluster):
    stack = cluster.stack
    raw = f"{stack.settings.topic_prefix}raw"
    leaders = describe(stack.settings.kafka_bootstrap, raw).leaders_of(raw)
    victim = collections.Counter(leaders.values()).most_common(1)[0][0]
    thing, load = cluster.load()
    killed, pid = time.monotonic(), stack.kafka.node(victim).pid
    # Kept down a while (the supervisor would restart it at once) to see what an operator sees meanwhile.
    killer = threading.Thread(target=stack.restart_brokers, args=([victim], signal.SIGKILL, DOWN_S))
    killer.start()

    def led_by_others() -> bool:
        try:
            now = describe(stack.settings.kafka_bootstrap, raw, timeout=2).leaders_of(raw)
        except KafkaException:
            return False
        return all(leader not in (-1, victim) for leader in now.values())

    eventually(led_by_others, timeout=30, interval=0.1)
    elected = time.monotonic() - killed
    rows = sluice_status(stack)
    assert time.monotonic() - killed < DOWN_S, "the status came too late to see the broker down"
    assert "2 of 3 up" in rows["brokers"] and f"down: {victim}" in rows["brokers"], rows
    assert "0 partitions" not in rows["under-replicated"] and "raw" in rows["under-replicated"], rows
    killer.join()
    eventually(lambda: back_in_sync(stack, victim, pid), timeout=120, interval=0.5)
    led = sum(1 for b in leaders.values() if b == victim)
    cluster.unnoticed(thing, load, f"leader SIGKILL: broker {victim} led {led} of {len(leaders)} raw partitions; "
                      f"new leaders after {elected:.1f} s; down {DOWN_S} s, back in sync "
                      f"{time.monotonic() - killed:.1f} s after the kill")


def test_sigkill_of_the_active_controller_costs_clients_nothing(cluster):
    stack = cluster.stack
    victim = stack.kafka.active_controller()
    assert victim is not None
    thing, load = cluster.load()
    killed, pid = time.monotonic(), stack.kafka.node(victim).pid
    os.kill(pid, signal.SIGKILL)
    eventually(lambda: stack.kafka.active_controller() not in (None, victim), timeout=30, interval=0.1)
    elected = time.monotonic() - killed
    successor = stack.kafka.active_controller()
    eventually(lambda: back_in_sync(stack, victim, pid), timeout=120, interval=0.5)
    cluster.unnoticed(thing, load, f"controller SIGKILL: node {victim} was the active controller; node "
                      f"{successor} took over after {elected:.1f} s, all back in sync after "
                      f"{time.monotonic() - killed:.1f} s")


def test_a_rolling_restart_of_every_broker_costs_clients_nothing(cluster):
    stack = cluster.stack
    thing, load = cluster.load()
    took = []
    for node in stack.kafka.nodes:
        begun = time.monotonic()
        stack.restart_brokers([node.node_id])  # SIGTERM: a controlled shutdown, then started again
        eventually(lambda: in_sync(stack, node.bootstrap), timeout=120, interval=0.5)  # in sync before the next
        took.append(time.monotonic() - begun)
    cluster.unnoticed(thing, load, f"rolling restart: each broker stopped, started and back in sync in "
                      f"{', '.join(f'{t:.1f}' for t in took)} s")


def test_with_two_brokers_down_clients_are_refused_and_nothing_accepted_is_lost(cluster):
    stack = cluster.stack
    thing, load = cluster.load()
    victims = [node.node_id for node in stack.kafka.nodes[1:]]
    killed = time.monotonic()
    stack.restart_brokers(victims, signal.SIGKILL, down_s=15)  # held down 15 s: beyond the edge's 10 s
    relaunched = time.monotonic()
    eventually(lambda: all(in_sync(stack, stack.kafka.node(v).bootstrap) for v in victims), timeout=150,
               interval=0.5)
    cluster.finish(load, f"two brokers down: nodes {victims} SIGKILLed and kept down 15 s, back in sync "
                         f"{time.monotonic() - killed:.1f} s after the kill")
    refused = load.refusals
    assert refused, "no client was refused while two brokers of three were down"
    assert all(a.status == 503 and a.retry_after for a in refused), load.summary()
    assert not load.unanswered and not load.given_up and stages_restarted(stack) == {}, load.summary()
    # Sent once both were dead and answered before they were started again: nothing could be durable.
    assert load.accepted_between(killed + 0.5, relaunched) == []
    print(cluster.landed_once(thing, load))


def test_a_processor_and_an_edge_sigkilled_under_load_lose_and_duplicate_nothing(cluster):
    stack = cluster.stack
    thing, load = cluster.load()
    restarted = {}
    for victim in ("processor", "edge"):  # the edge is the primary: it holds the warehouse and its sinks
        child = next(c for c in stack.children if c.name == victim)
        killed = time.monotonic()
        os.kill(child.process.pid, signal.SIGKILL)
        eventually(lambda: stack.supervisor.children[victim].restarts >= 1
                   and stack.supervisor.children[victim].state == "running", timeout=60, interval=0.2)
        eventually(lambda: ready(stack.url), timeout=120, interval=0.5)
        restarted[victim] = time.monotonic() - killed
        load.wait_accepted(len(load.accepted) + 500)
    cluster.finish(load, f"processor and primary edge SIGKILLed: ready again after "
                         f"{', '.join(f'{name} {t:.1f} s' for name, t in restarted.items())}; clients moved to the "
                         f"other edge {len(load.unanswered)} times")
    assert not load.given_up and all(a.status in (429, 503) and a.retry_after for a in load.refusals), load.summary()
    print(cluster.landed_once(thing, load))
