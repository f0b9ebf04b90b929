"""Prometheus metrics on the real stack, read with prometheus-client's own parser: the
edge's /metrics and the processor's own port show requests, verdicts and inserted rows
moving after an ingest, labelled by route template (never by thing id)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
from prometheus_client.parser import text_string_to_metric_families

from schemas import Topics
from tests.conftest import eventually
from tests.seed import SEED_FRAMES


def scrape(url: str) -> dict[str, list]:
    """{family name: [samples]} of one /metrics answer."""
    reply = httpx.get(url, timeout=10)
    assert reply.status_code == 200, reply.text
    return {family.name: family.samples for family in text_string_to_metric_families(reply.text)}


def total(families: dict, name: str, **labels) -> float:
    """The sum of the samples of counter `name` (its `_total` samples) whose labels include `labels`."""
    return sum(s.value for s in families.get(name, ()) if s.name == f"{name}_total"
               and all(s.labels.get(k) == v for k, v in labels.items()))


def test_edge_and_processor_metrics_count_an_ingest_exactly_once(api, stack, battery):
    """Three requests of five readings move each counter by exactly their share: a count
    made twice (or skipped) anywhere on the way fails here."""
    edge_url = f"{stack.url}/metrics"
    processor_url = f"http://{stack.settings.http_host}:{stack.settings.processor_metrics_port}/metrics"
    route = "/v2/thing/{thing_id}/data"
    readings = 3 * len(SEED_FRAMES["frames"][0]["metrics"])
    eventually(lambda: pipeline_settled(stack, committed=False))  # what earlier tests sent is all counted
    before_edge, before_processor = scrape(edge_url), scrape(processor_url)
    for _ in range(3):
        assert api.post(f"/v2/thing/{battery}/data", json=SEED_FRAMES).status_code == 202
    eventually(lambda: gained(before_edge, scrape(edge_url), "sluice_table_rows_inserted", table="readings"))
    eventually(lambda: pipeline_settled(stack, committed=True))  # ... and ours: nothing is left to count twice
    edge, processor = scrape(edge_url), scrape(processor_url)

    assert gained(before_edge, edge, "sluice_http_requests", route=route, method="POST", status="202") == 3
    assert not any(battery in str(s.labels) for samples in edge.values() for s in samples), "a thing id as label"
    assert any(s.labels.get("route") == route for s in edge["sluice_http_request_duration_seconds"])
    assert gained(before_processor, processor, "sluice_processor_messages") == 3
    assert gained(before_processor, processor, "sluice_processor_verdicts", status="ingested") == 3
    assert gained(before_processor, processor, "sluice_processor_items_ingested") == 3  # one frame each

    # In embedded mode the sinks are threads of the edge: their rows show at the edge's /metrics.
    assert gained(before_edge, edge, "sluice_table_rows_inserted", table="readings") == readings
    assert gained(before_edge, edge, "sluice_sink_rows_inserted", sink="sink-readings") == readings
    assert gained(before_edge, edge, "sluice_table_rows_inserted", table="ingest_log") == 3
    assert gained(before_edge, edge, "sluice_sink_bytes") > 0
    assert "sluice_edge_produce_queue_messages" in edge
    states = {s.labels["component"]: s.value for s in edge["sluice_component_up"]}
    assert states and all(value == 1.0 for value in states.values()), states
    # `sluice up`'s restart counts (its run/status.json), per child, through the edge.
    assert {s.labels["child"] for s in edge["sluice_supervisor_restarts"]} >= {"edge", "processor"}


def gained(before: dict, now: dict, name: str, **labels) -> float:
    """How much counter `name` (where its labels include `labels`) moved from `before` to `now`."""
    return total(now, name, **labels) - total(before, name, **labels)


def pipeline_settled(stack, committed: bool) -> bool:
    """The processor and the readings and ingest-log sinks have committed all there is (a group that
    never committed has no lag yet: `committed` asks that all three have)."""
    prefix, topics = stack.settings.topic_prefix, Topics(stack.settings.topic_prefix)
    wanted = {(topics.processors_group, topics.raw), (f"{prefix}sink-readings", topics.frames),
              (f"{prefix}sink-ingest-log", topics.results)}
    lags: dict[tuple, float] = {}
    for sample in scrape(f"{stack.url}/metrics").get("sluice_consumer_lag", ()):
        key = (sample.labels["group"], sample.labels["topic"])
        if key in wanted:
            lags[key] = lags.get(key, 0) + sample.value
    return (set(lags) == wanted or not committed) and not any(lags.values())


def test_a_refused_request_is_counted_by_status(api, stack):
    edge_url = f"{stack.url}/metrics"
    before = total(scrape(edge_url), "sluice_http_rejects", status="413")
    huge = b"x" * (stack.settings.max_api_body_bytes + 1)
    assert api.post("/v2/sites", content=huge, headers={"Content-Type": "application/json"}).status_code == 413
    assert total(scrape(edge_url), "sluice_http_rejects", status="413") == before + 1


def processor_lag(stack) -> float | None:
    """The processor group's lag on the raw topic, summed over partitions; None before it has committed."""
    samples = [s for s in scrape(f"{stack.url}/metrics").get("sluice_consumer_lag", ())
               if s.labels["group"] == f"{stack.settings.topic_prefix}processors"
               and s.labels["topic"] == f"{stack.settings.topic_prefix}raw"]
    return sum(s.value for s in samples) if samples else None


def test_lag_rises_while_the_processor_is_stopped_and_falls_to_zero_after(api, stack, battery):
    assert api.post(f"/v2/thing/{battery}/data", json=SEED_FRAMES).status_code == 202
    eventually(lambda: processor_lag(stack) == 0)
    processor = next(child.process for child in stack.children if child.name == "processor")
    processor.send_signal(signal.SIGSTOP)
    try:
        for _ in range(20):
            assert api.post(f"/v2/thing/{battery}/data", json=SEED_FRAMES).status_code == 202
        assert eventually(lambda: (processor_lag(stack) or 0) >= 20, timeout=10)
    finally:
        processor.send_signal(signal.SIGCONT)
    eventually(lambda: processor_lag(stack) == 0)


def test_sluice_status_once_shows_each_stage(api, stack, battery):
    assert api.post(f"/v2/thing/{battery}/data", json=SEED_FRAMES).status_code == 202
    eventually(lambda: processor_lag(stack) == 0)
    out = subprocess.run([sys.executable, "-m", "sluice.cli", "status", "--once", "--interval", "0.5"],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, **stack.settings.to_env(), "COLUMNS": "200"})
    assert out.returncode == 0, out.stdout + out.stderr
    lines = {line.split("│")[1].strip(): line for line in out.stdout.splitlines()
             if line.count("│") >= 5 and line.split("│")[1].strip()}
    assert "ready" in lines["edge"] and "req/s" in lines["edge"], out.stdout
    assert " up " in lines["processor"] and "msg/s" in lines["processor"], out.stdout
    assert "last insert" in lines["sink-readings"] and "rows/s" in lines["sink-readings"], out.stdout
    assert " up " in lines["integrations"], out.stdout
    assert "rejects" in out.stdout
