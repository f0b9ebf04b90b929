"""`sluice status`: each stage at a glance, from the edge's /metrics and /readyz and the
processor's (and a standalone sink's) own /metrics; and Kafka's brokers, its active
controller and the partitions out of sync, from the cluster's metadata (bus.cluster).

A snapshot is two scrapes `interval` seconds apart, so it can show rates; the live
view keeps scraping and redraws. Nothing here keeps state of its own: what an
operator sees is what Prometheus would scrape.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import httpx
from confluent_kafka import KafkaException
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from bus.cluster import ClusterView, describe
from config import Settings
from sluice.endpoints import scrape_host
from sluice.local_cluster import LocalKafkaCluster
from sluice.local_kafka import LocalKafkaError

Samples = dict[str, list[tuple[dict, float]]]  # sample name -> [(labels, value)]


def scrape(client: httpx.Client, url: str) -> Samples | None:
    """The samples at `url`, or None when it does not answer."""
    try:
        reply = client.get(url)
        reply.raise_for_status()
    except httpx.HTTPError:
        return None
    samples: Samples = defaultdict(list)
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            samples[sample.name].append((sample.labels, sample.value))
    return samples


def total(samples: Samples | None, name: str, **labels) -> float:
    return sum(value for got, value in (samples or {}).get(name, ())
               if all(got.get(k) == v for k, v in labels.items()))


def by(samples: Samples | None, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for labels, value in (samples or {}).get(name, ()):
        out[labels.get(label, "")] += value
    return dict(out)


@dataclass
class Snapshot:
    taken_at: float
    edge: Samples | None
    ready: dict | None
    processor: Samples | None
    sink: Samples | None  # a standalone sink's port; embedded sinks are in `edge`
    kafka: ClusterView | None = None  # None: no broker answered
    controller: int | None = None  # the local cluster's active controller; None: not known
    integrations: Samples | None = None  # the integrations stage's port (its first instance)
    previous: "Snapshot | None" = field(default=None, repr=False)

    def rate(self, source: str, name: str, **labels) -> float | None:
        before = self.previous
        if before is None or getattr(self, source) is None or getattr(before, source) is None:
            return None
        elapsed = self.taken_at - before.taken_at
        delta = total(getattr(self, source), name, **labels) - total(getattr(before, source), name, **labels)
        return max(0.0, delta) / elapsed if elapsed > 0 else None


class Status:
    def __init__(self, settings: Settings, url: str | None = None, timeout: float = 5.0) -> None:
        host = scrape_host(settings)
        self.edge_url = (url or f"http://{host}:{settings.http_port}").rstrip("/")
        self.processor_url = f"http://{host}:{settings.processor_metrics_port}/metrics"
        self.sink_url = None if settings.embedded_warehouse else f"http://{host}:{settings.sink_metrics_port}/metrics"
        self.integrations_url = f"http://{host}:{settings.integrations_metrics_port}/metrics"
        self.prefix = settings.topic_prefix
        self.bootstrap = settings.kafka_bootstrap
        self._local = _local_cluster(settings)
        self._client = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def snapshot(self, previous: Snapshot | None = None) -> Snapshot:
        try:
            ready = self._client.get(f"{self.edge_url}/readyz").json()
        except (httpx.HTTPError, ValueError):
            ready = None
        return Snapshot(time.time(), scrape(self._client, f"{self.edge_url}/metrics"), ready,
                        scrape(self._client, self.processor_url),
                        scrape(self._client, self.sink_url) if self.sink_url else None, self._kafka(),
                        self._local.active_controller() if self._local else None,
                        scrape(self._client, self.integrations_url), previous)

    def _kafka(self) -> ClusterView | None:
        if not self.bootstrap:
            return None
        try:
            return describe(self.bootstrap, self.prefix, timeout=3)
        except KafkaException:
            return None

    def render(self, snap: Snapshot) -> Group:
        stages = Table(title="sluice status", title_justify="left")
        for column in ("stage", "state", "rate", "lag", "detail"):
            stages.add_column(column)
        lag = self._lag(snap.edge)
        edge_state = "down" if snap.edge is None else ("ready" if snap.ready and snap.ready.get("ready")
                                                       else "up, not ready")
        requests = snap.rate("edge", "sluice_http_requests_total")
        stages.add_row("edge", edge_state, _per_s(requests, "req"), "", self._unhealthy(snap.ready))
        processor_state = "up" if snap.processor is not None else "down"
        stages.add_row("processor", processor_state, _per_s(snap.rate("processor", "sluice_processor_messages_total"),
                                                            "msg"),
                       _lag(lag.get("processors")),
                       f"{_per_s(snap.rate('processor', 'sluice_processor_items_ingested_total'), 'items')} ingested")
        sinks = snap.sink if snap.sink is not None else snap.edge
        source = "sink" if snap.sink is not None else "edge"
        components = by(sinks, "sluice_component_up", "component")
        last = by(sinks, "sluice_sink_last_insert_timestamp_seconds", "sink")
        for sink in sorted(by(sinks, "sluice_sink_rows_inserted_total", "sink")):
            up = components.get(sink)
            state = "down" if sinks is None else ("up" if up == 1.0 else "failing" if up is not None else "up")
            when = f"last insert {snap.taken_at - last[sink]:.0f} s ago" if last.get(sink) else "no insert yet"
            errors = total(sinks, "sluice_sink_insert_errors_total", sink=sink)
            stages.add_row(sink, state, _per_s(snap.rate(source, "sluice_sink_rows_inserted_total", sink=sink), "rows"),
                           _lag(lag.get(sink)),
                           when + (f", {errors:.0f} insert errors" if errors else ""))
        if sinks is None:
            stages.add_row("sinks", "down", "", "", "no metrics")
        self._integration_rows(stages, snap)
        rejects = Table(title="rejects", title_justify="left")
        rejects.add_column("where")
        rejects.add_column("reason")
        rejects.add_column("count", justify="right")
        for status, count in sorted(by(snap.edge, "sluice_http_rejects_total", "status").items()):
            rejects.add_row("edge", f"HTTP {status}", f"{count:.0f}")
        for reason, count in sorted(by(snap.processor, "sluice_deadletters_total", "reason").items()):
            rejects.add_row("processor", reason, f"{count:.0f}")
        return Group(Text(f"scraping {self._where()}"), stages, self._render_kafka(snap), rejects)

    @staticmethod
    def _integration_rows(stages: Table, snap: Snapshot, shown: int = 20) -> None:
        """The integrations stage, then each integration it runs (MQTT, polls): running or not,
        messages made durable per second, when one last was."""
        running = by(snap.integrations, "sluice_integration_running", "integration")
        idle = sum(1 for up in running.values() if up != 1.0)
        stages.add_row("integrations", "down" if snap.integrations is None else "up",
                       _per_s(snap.rate("integrations", "sluice_integration_messages_durable_total"), "msg"), "",
                       f"{len(running) - idle} running, {idle} not" if running else "none running here")
        last = by(snap.integrations, "sluice_integration_last_success_timestamp_seconds", "integration")
        for integration in sorted(running)[:shown]:
            rate = snap.rate("integrations", "sluice_integration_messages_durable_total", integration=integration)
            when = f"last message {snap.taken_at - last[integration]:.0f} s ago" if last.get(integration) else "none yet"
            stages.add_row(f"  {integration}", "running" if running[integration] == 1.0 else "not running",
                           _per_s(rate, "msg"), "", when)

    def _render_kafka(self, snap: Snapshot) -> Table:
        kafka = Table(title="kafka", title_justify="left")
        for column in ("", "state", "detail"):
            kafka.add_column(column)
        view = snap.kafka
        if view is None:
            kafka.add_row("brokers", "down", f"no broker at {self.bootstrap or '(no KAFKA_BOOTSTRAP_SERVERS)'} answers")
            return kafka
        known = view.known_brokers
        down = f"; down: {', '.join(map(str, view.down))}" if view.down else ""
        kafka.add_row("brokers", f"{len(view.brokers)} of {len(known)} up",
                      ", ".join(f"{b} {view.brokers[b]}" for b in sorted(view.brokers)) + down)
        controller = snap.controller
        kafka.add_row("controller", "—" if controller is None else f"node {controller}",
                      "the KRaft quorum's leader" if controller is not None else "known for a local cluster only")
        for index, name in enumerate(("under-replicated", "offline")):
            per_topic = {topic.removeprefix(self.prefix): counts[index]
                         for topic, counts in sorted(view.health.items()) if counts[index]}
            kafka.add_row(name, f"{sum(per_topic.values())} partitions",
                          ", ".join(f"{topic} {count}" for topic, count in per_topic.items()))
        return kafka

    def _where(self) -> str:
        """Which stack this is: every address scraped."""
        sink = f", sink {self.sink_url}" if self.sink_url else ""
        return f"edge {self.edge_url}, processor {self.processor_url}{sink}"

    def _lag(self, edge: Samples | None) -> dict[str, float]:
        """Lag by consumer group, the topic prefix dropped ("processors", "sink-readings", …)."""
        return {group.removeprefix(self.prefix): value
                for group, value in by(edge, "sluice_consumer_lag", "group").items()}

    @staticmethod
    def _unhealthy(ready: dict | None) -> str:
        if ready is None:
            return "no answer"
        bad = [f"{name}: {c.get('state')}" for name, c in (ready.get("components") or {}).items() if not c.get("ok")]
        return ", ".join(bad) or "all loops ok"


def _local_cluster(settings: Settings) -> LocalKafkaCluster | None:
    """The local cluster this stack runs in its state folder, when the bootstrap is its (its controller
    is read from the nodes' files); None for an external cluster."""
    try:
        local = LocalKafkaCluster(settings.state_dir, settings.brokers, settings.local_kafka_port)
    except (LocalKafkaError, ValueError):
        return None
    return local if local.bootstrap == settings.kafka_bootstrap else None


def _per_s(value: float | None, unit: str) -> str:
    return "—" if value is None else f"{value:,.1f} {unit}/s"


def _lag(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def run(settings: Settings, once: bool, interval: float, url: str | None = None) -> int:
    """Print one snapshot (`once`; exit 1 when the edge does not answer) or redraw until Ctrl-C."""
    status = Status(settings, url)
    console = Console()
    try:
        snap = status.snapshot()
        time.sleep(interval)
        snap = status.snapshot(snap)
        if once:
            console.print(status.render(snap))
            return 0 if snap.edge is not None else 1
        with Live(status.render(snap), console=console, refresh_per_second=4) as live:
            while True:
                time.sleep(interval)
                snap = status.snapshot(_forget_previous(snap))
                live.update(status.render(snap))
    except KeyboardInterrupt:
        return 0
    finally:
        status.close()


def _forget_previous(snap: Snapshot) -> Snapshot:
    """`snap` without its own predecessor, so a live view does not keep a chain of every scrape."""
    snap.previous = None
    return snap
