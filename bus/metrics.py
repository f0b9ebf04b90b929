"""Every service's Prometheus metrics, in one place, on the process's default registry.

One process runs one service, so each family below appears only where its
service runs (an unused family is exported with no samples). Labels stay
bounded: route templates, status codes, verdict codes, table and loop names;
never a thing, request or key id. `serve(port)` exposes them on a port of their
own, for services without HTTP (the processor, a standalone sink); the edge
serves them at `/metrics` (`exposition()`).
"""

from __future__ import annotations

import json
import logging

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from bus.health import health

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BYTES_BUCKETS = tuple(2 ** n for n in range(8, 22, 2))  # 256 B … 1 MiB
_SIZE_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 5000)

# Edge
HTTP_REQUESTS = Counter("sluice_http_requests_total", "HTTP requests answered, by route template, method and status.",
                        ["route", "method", "status"])
HTTP_DURATION = Histogram("sluice_http_request_duration_seconds", "Time to answer an HTTP request, by route template.",
                          ["route"], buckets=_LATENCY_BUCKETS)
HTTP_BODY = Histogram("sluice_http_request_body_bytes", "Request body sizes, by route template.",
                      ["route"], buckets=_BYTES_BUCKETS)
PRODUCE_QUEUE = Gauge("sluice_edge_produce_queue_messages",
                      "Messages the edge's raw producer holds, not yet acknowledged by the broker.")
HTTP_REJECTS = Counter("sluice_http_rejects_total",
                       "Requests refused for a limit or an outage (408, 413, 429, 503), by status.", ["status"])
EDGE_SHED = Counter("sluice_edge_shed_total",
                    "Ingest requests shed (503) because the pipeline is behind, by reason: `heavy_key` (a key above "
                    "its fair share, over the bound) or `backlog` (every async request, past twice the bound).",
                    ["reason"])
STAGE_BACKLOG = Gauge("sluice_stage_backlog_seconds",
                      "Work waiting in front of a stage, in seconds of its recent drain rate, by consumer group "
                      "(the edge's admission view).", ["group"])

# Processor
RAW_MESSAGES = Counter("sluice_processor_messages_total", "Raw requests taken from the raw topic.")
INGEST_MESSAGES = Counter("sluice_processor_ingest_messages_total",
                          "Messages taken from the public ingest topic (outside producers').")
ITEMS = Counter("sluice_processor_items_ingested_total",
                "Frames, items or records accepted (a verdict's frames_ingested), summed over verdicts.")
VERDICTS = Counter("sluice_processor_verdicts_total", "Verdicts given, by status and error code.", ["status", "code"])
DEAD_LETTERS = Counter("sluice_deadletters_total", "Requests dead-lettered, by reason.", ["reason"])
SET_ASIDE = Counter("sluice_processor_set_aside_requests_total",
                    "Requests judged beside the others, their org's recent requests being costly (processors.lanes).")
BATCH_SIZE = Histogram("sluice_processor_batch_messages", "Raw messages per processor batch.", buckets=_SIZE_BUCKETS)
CATALOG_WAITS = Histogram("sluice_processor_catalog_wait_seconds",
                          "Time a batch waited for the catalog view to catch up with its requests' catalog "
                          "(only batches that waited).", buckets=_LATENCY_BUCKETS)
BATCH_DURATION = Histogram("sluice_processor_batch_duration_seconds",
                           "Time to process a batch, outputs acknowledged included.", buckets=_LATENCY_BUCKETS)

# Sinks
ROWS_INSERTED = Counter("sluice_sink_rows_inserted_total", "Rows inserted into the warehouse, by sink.", ["sink"])
TABLE_ROWS = Counter("sluice_table_rows_inserted_total", "Rows inserted into the warehouse, by table.", ["table"])
INSERT_DURATION = Histogram("sluice_sink_insert_duration_seconds", "Time of one successful insert, by sink.",
                            ["sink"], buckets=_LATENCY_BUCKETS)
INSERT_ERRORS = Counter("sluice_sink_insert_errors_total", "Inserts that failed (and are retried), by sink.", ["sink"])
LAST_INSERT = Gauge("sluice_sink_last_insert_timestamp_seconds", "When the sink last inserted rows (Unix time).",
                    ["sink"])
SINK_BATCH = Histogram("sluice_sink_batch_messages", "Messages per inserted batch, by sink.", ["sink"],
                       buckets=(1, 10, 100, 500, 1000, 5000, 10000))
SINK_BYTES = Counter("sluice_sink_bytes_total", "Bytes of Kafka messages inserted (encoded size), by sink.", ["sink"])
COMMIT_DURATION = Histogram("sluice_sink_commit_duration_seconds", "Time to commit a batch's offsets, by sink.",
                            ["sink"], buckets=_LATENCY_BUCKETS)

# Every Kafka client
CLIENT_REPLACEMENTS = Counter("sluice_kafka_client_replacements_total",
                              "Kafka clients closed and built anew after a fatal error (a fenced static member), "
                              "by loop.", ["component"])

_STATES = ("starting", "ok", "failing", "stalled", "dead")


class HealthCollector(Collector):
    """The process's loop states (bus.health) as `sluice_component_up` and `sluice_component_state`."""

    def collect(self):
        up = GaugeMetricFamily("sluice_component_up", "1 when the loop is ok, else 0.", labels=["component"])
        state = GaugeMetricFamily("sluice_component_state", "1 for the loop's current state.",
                                  labels=["component", "state"])
        for name, status in health().snapshot().items():
            up.add_metric([name], 1.0 if status["ok"] else 0.0)
            for each in _STATES:
                state.add_metric([name, each], 1.0 if status["state"] == each else 0.0)
        yield up
        yield state


REGISTRY.register(HealthCollector())


def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric of this process, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def serve(port: int, host: str = "0.0.0.0") -> bool:
    """Serve /metrics on `port` in a daemon thread; False (logged) when the port is taken or 0."""
    if not port:
        return False
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        log.warning("metrics: cannot listen on %s:%d (%s); this process exports no metrics", host, port, exc)
        return False
    return True


class SupervisorCollector(Collector):
    """`sluice up`'s restart counts, read from its status file (run/status.json) at each scrape.

    The supervisor itself serves nothing: the edge, on the same machine and state
    folder, exports what it wrote. No file (a container deployment): no samples.
    """

    def __init__(self, status_path) -> None:
        self._path = status_path

    def collect(self):
        restarts = CounterMetricFamily("sluice_supervisor_restarts", "Restarts of each child by `sluice up`.",
                                       labels=["child"])
        running = GaugeMetricFamily("sluice_supervisor_child_running", "1 while the child runs.", labels=["child"])
        try:
            children = json.loads(self._path.read_text())["children"]
        except (OSError, ValueError, KeyError):
            children = {}
        for name, child in children.items():
            restarts.add_metric([name], float(child.get("restarts", 0)))
            running.add_metric([name], 1.0 if child.get("state") == "running" else 0.0)
        yield restarts
        yield running
