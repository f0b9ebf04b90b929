"""The stage's Prometheus metrics, per integration this instance runs, read from the runners'
statuses at each scrape (served on SLUICE_INTEGRATIONS_METRICS_PORT beside the loops' health)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from integrations.status import RunnerStatus

Running = Callable[[], Iterable[tuple[str, str, RunnerStatus]]]  # (integration id, kind, status)


class IntegrationsCollector(Collector):
    def __init__(self, running: Running) -> None:
        self._running = running

    def collect(self):
        labels = ["integration", "kind"]
        received = CounterMetricFamily("sluice_integration_messages_received",
                                       "Messages received from the source (MQTT messages, polled pages).", labels=labels)
        durable = CounterMetricFamily("sluice_integration_messages_durable",
                                      "Messages made durable on the raw topic.", labels=labels)
        up = GaugeMetricFamily("sluice_integration_running", "1 while the integration's connection works.",
                               labels=labels)
        success = GaugeMetricFamily("sluice_integration_last_success_timestamp_seconds",
                                    "When a message of the integration was last made durable (Unix time).",
                                    labels=labels)
        for integration_id, kind, status in self._running():
            values = [integration_id, kind]
            received.add_metric(values, status.messages_in)
            durable.add_metric(values, status.messages_out)
            up.add_metric(values, 1 if status.state == "running" else 0)
            if status.last_success_at:
                success.add_metric(values, status.last_success_at / 1000)
        yield from (received, durable, up, success)
