"""`sluice`: run the local stack or one service, and query the warehouse."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys

from config import Settings


def _up(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.endpoints import endpoints_path, scrape_host
    from sluice.local_kafka import LocalKafkaError
    from sluice.local_mqtt import LocalMqttError
    from sluice.local_registry import LocalRegistryError
    from sluice.stack import Stack, StackError
    from sluice.state_lock import StateLocked
    from sluice.topics_admin import min_insync_replicas, replication_factor

    if args.port:
        settings = dataclasses.replace(settings, http_port=args.port)
    if args.with_registry:
        settings = dataclasses.replace(settings, with_registry=True)
    if args.with_mqtt:
        settings = dataclasses.replace(settings, with_mqtt=True)
    if args.brokers:
        settings = dataclasses.replace(settings, brokers=args.brokers)
    stack = Stack(settings)
    try:
        stack.claim_state_dir()
    except StateLocked as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 1
    fetches = " and downloads the schema registry" if settings.starts_local_registry else ""
    print(f"sluice: starting the local stack (first start resolves the Kafka jars{fetches}; this can take a minute)")
    # SIGTERM during start-up behaves like Ctrl-C: Stack.start stops what it started.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        stack.start()
    except (StackError, LocalKafkaError, LocalRegistryError, LocalMqttError) as exc:  # a port taken, a failed download, ...
        print(f"sluice: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sluice: stopped during start-up", flush=True)
        return 0
    key = stack.settings.admin_key
    where = stack.settings.kafka_bootstrap
    if stack.kafka is not None and len(stack.kafka.nodes) > 1:
        replicas = replication_factor(stack.settings, len(stack.kafka.nodes))
        where += (f"   ({len(stack.kafka.nodes)} KRaft nodes in {stack.settings.state_dir}/kafka-N; topics: "
                  f"{replicas} replicas, min.insync.replicas {min_insync_replicas(stack.settings, replicas)})")
    warehouse = stack.settings.clickhouse_url or f"chDB in {stack.settings.chdb_path}"
    registry = stack.settings.schema_registry_url or "none (--with-registry starts one)"
    if stack.registry is not None:
        registry += f"   (local Apicurio; log {stack.registry.stdout_path})"
    mqtt = f"\n  MQTT       {stack.mqtt.url}   (local Mosquitto, for MQTT integrations)" if stack.mqtt else ""
    clickhouse = (f"\n  ClickHouse http://{scrape_host(stack.settings)}:{stack.settings.clickhouse_port}   (ClickHouse "
                  "clients: any user, a Sluice key as password)" if stack.settings.clickhouse_port else "")
    sink_metrics = "" if stack.settings.embedded_warehouse else (
        f"\n             http://{stack.settings.http_host}:{stack.settings.sink_metrics_port}/metrics   (sink)")
    print(f"""
sluice is up.
  API        {stack.url}   (OpenAPI: {stack.url}/openapi.json, docs: {stack.url}/docs){clickhouse}
  Kafka      {where}
  registry   {registry}{mqtt}
  warehouse  {warehouse}, database {stack.settings.database}
  logs       {stack.settings.state_dir / 'logs'}
  endpoints  {endpoints_path(stack.settings.state_dir)}   (where the other commands find this stack)
  prometheus {stack.settings.state_dir / 'run' / 'prometheus.yml'}   (scrape config for this stack)
  status     {stack.supervisor.status_path}   (children, restarts; dead children are restarted)
  metrics    {stack.url}/metrics   (edge, embedded sinks, consumer lag, restarts)
             http://{stack.settings.http_host}:{stack.settings.processor_metrics_port}/metrics   (processor)
             http://{stack.settings.http_host}:{stack.settings.integrations_metrics_port}/metrics   (integrations)\
{sink_metrics}
  live view  sluice status   (or sluice status --once)

  admin key  {key}
  try:       curl -s -H 'X-Api-Key: {key}' {stack.url}/readyz

Ctrl-C stops everything.""", flush=True)
    try:
        return stack.wait()
    finally:
        print("sluice: stopping", flush=True)
        stack.stop()


def _status(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.status import run

    return run(settings, once=args.once, interval=args.interval, url=args.url)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _service(name: str):
    def run(settings: Settings, args: argparse.Namespace) -> int:
        from sluice import services

        if not settings.kafka_bootstrap:
            print("sluice: KAFKA_BOOTSTRAP_SERVERS must be set to run a single service", file=sys.stderr)
            return 2
        getattr(services, f"run_{name}")(settings)
        return 0

    return run


def _sql(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.sql import run_sql

    return run_sql(settings, args.query, args.format)


def _plot(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.plot import run_plot

    return run_plot(settings, args.thing, args.metric, args.since, args.until, args.out)


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException

    from sluice.replay import ReplayError, default_bootstrap, parse_since, replay_dead_letters

    try:
        since_ms = parse_since(args.since) if args.since else None
    except ValueError:
        print(f"sluice replay: --since takes an ISO 8601 time or epoch ms, not {args.since!r}", file=sys.stderr)
        return 2
    bootstrap = default_bootstrap(settings)
    print(f"sluice replay: Kafka {bootstrap}, topic prefix {settings.topic_prefix!r}", flush=True)
    try:
        matched, replayed = replay_dead_letters(bootstrap, settings, reason=args.reason,
                                                request_id=args.request_id, since_ms=since_ms,
                                                dry_run=args.dry_run)
    except ReplayError as exc:
        print(f"sluice replay: {exc}", file=sys.stderr)
        return 1
    except KafkaException as exc:
        print(f"sluice replay: Kafka at {bootstrap} failed (set KAFKA_BOOTSTRAP_SERVERS, or is `sluice up` "
              f"running?): {exc}", file=sys.stderr)
        return 1
    if args.dry_run:
        print(f"{matched} dead letters matched; dry run, nothing replayed")
    else:
        print(f"{matched} dead letters matched; {replayed} requests replayed to the raw topic")
    return 0


def _preset(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.preset import install

    return install(settings, args.name, args.url, args.key)


def _import(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from sluice.backfill.importer import ImportOptions, run_import
    from sluice.backfill.rows import detect_format
    from sluice.backfill.sender import ImportAborted
    from sluice.stack import admin_key

    path = Path(args.file)
    try:
        fmt = args.format or detect_format(path)
        key = args.key or admin_key(settings)
    except (ValueError, OSError) as exc:
        print(f"sluice import: {exc}", file=sys.stderr)
        return 2
    options = ImportOptions(url=args.url or f"http://{settings.http_host}:{settings.http_port}", key=key, fmt=fmt,
                            concurrency=args.concurrency, chunk_values=args.chunk_values,
                            max_body=args.max_body_bytes or settings.max_body_bytes - 4096,
                            max_rate=args.max_rate, restart=args.restart, progress=not args.quiet)
    try:
        summary = run_import(path, options)
    except (ImportAborted, ValueError, OSError) as exc:
        print(f"sluice import: {exc} (rerun to resume from the checkpoint)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sluice import: interrupted; rerun to resume from the checkpoint", file=sys.stderr)
        return 130
    print(summary.render())
    return 0


def _prometheus_config(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from sluice.endpoints import endpoints_path
    from sluice.prometheus_config import default_rule_files, prometheus_config

    if not endpoints_path(settings.state_dir).exists():
        print(f"sluice: no running stack recorded in {endpoints_path(settings.state_dir)}; the config names "
              "the ports of the environment and defaults", file=sys.stderr)
    rules = [Path(p) for p in args.rules] if args.rules else default_rule_files()
    missing = [str(p) for p in rules if not p.is_file()]
    if missing:
        print(f"sluice: no such rule file: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        text = prometheus_config(settings, args.interval, rules)
    except ValueError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _topics(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.topics_admin import ensure_topics

    if not settings.kafka_bootstrap:
        print("sluice: KAFKA_BOOTSTRAP_SERVERS must be set", file=sys.stderr)
        return 2
    ensure_topics(settings.kafka_bootstrap, settings)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "finds_stack", False):  # a client of the running stack: its recorded endpoints first
        from sluice.endpoints import client_settings

        settings = client_settings()
    else:  # `up` and the services it runs: the environment only
        settings = Settings.from_env()
    from bus.logs import console_handler

    # A no-op when the process has configured logging already (sluice embedded in a program or a test).
    logging.basicConfig(level=logging.INFO, handlers=[console_handler(settings.log_repeat_window_s)])
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the output
    return args.run(settings, args)


def parser() -> argparse.ArgumentParser:
    """The command line: each command's arguments, and in `run` the function that runs it."""
    command_line = argparse.ArgumentParser(prog="sluice", description=__doc__)
    commands = command_line.add_subparsers(dest="command", required=True)
    _add_stack_commands(commands)
    _add_query_commands(commands)
    _add_helper_commands(commands)
    _add_import_command(commands)
    return command_line


def _add_stack_commands(commands) -> None:
    """`up` (the whole local stack) and the services it runs, one by one."""
    up = commands.add_parser("up", help="start the whole local stack and wait for Ctrl-C")
    up.add_argument("--port", type=int, help="HTTP port of the edge (default 8080 or SLUICE_HTTP_PORT)")
    up.add_argument("--brokers", type=int, choices=range(1, 10), metavar="N",
                    help="run a local Kafka cluster of N KRaft nodes (default 1 or SLUICE_BROKERS); with 3, a "
                    "broker may be lost without a client noticing")
    up.add_argument("--with-registry", action="store_true",
                    help="also start a local schema registry (Apicurio, on SLUICE_REGISTRY_PORT) for Avro "
                    "producers, unless SLUICE_SCHEMA_REGISTRY_URL names one (or SLUICE_WITH_REGISTRY=true)")
    up.add_argument("--with-mqtt", action="store_true",
                    help="also start a local MQTT broker (Mosquitto, on SLUICE_MQTT_PORT) for MQTT integrations "
                    "(docs/integrations.md; or SLUICE_WITH_MQTT=true)")
    up.set_defaults(run=_up)
    for name, text in (("edge", "serve the HTTP edge"), ("processor", "run the Faust processor"),
                       ("sink", "run the warehouse sinks (ClickHouse server mode)"),
                       ("edge-worker", "one more edge process on the port (SLUICE_EDGE_WORKERS > 1)"),
                       ("integrations", "run the integrations stage (MQTT subscriptions, HTTP polls)")):
        commands.add_parser(name, help=text).set_defaults(run=_service(name.replace("-", "_")))


def _add_query_commands(commands) -> None:
    """The clients of a running stack: sql, plot, topics, status, replay."""
    sql = commands.add_parser("sql", help="run a read-only query against the warehouse")
    sql.add_argument("query")
    sql.add_argument("--format", choices=("table", "csv", "json"), default="table",
                     help="table (default), csv with a header row, or json: one JSON object per line")
    sql.set_defaults(run=_sql, finds_stack=True)
    plot = commands.add_parser("plot", help="draw a metric's history as a PNG")
    plot.add_argument("thing", help="thing id (thg_…) or name")
    plot.add_argument("metric", help="metric name or id (mdef_…)")
    plot.add_argument("--from", dest="since", metavar="TIME", required=True,
                      help="start, ISO 8601 (UTC unless it says otherwise) or epoch ms")
    plot.add_argument("--to", dest="until", metavar="TIME", required=True, help="end (exclusive), likewise")
    plot.add_argument("--out", metavar="FILE.png", default=None, help="where to write (default THING-METRIC.png)")
    plot.set_defaults(run=_plot, finds_stack=True)
    commands.add_parser("topics", help="create the pipeline's topics").set_defaults(run=_topics, finds_stack=True)
    status = commands.add_parser("status", help="each stage at a glance: up/down, rates, lag, rejects, "
                                 "last insert (a live view; --once for one snapshot)")
    status.add_argument("--once", action="store_true", help="print one snapshot and exit (1: the edge is down)")
    status.add_argument("--interval", type=float, default=2.0, help="seconds between scrapes (rates span one)")
    status.add_argument("--url", help="the edge (default http://SLUICE_HTTP_HOST:SLUICE_HTTP_PORT)")
    status.set_defaults(run=_status, finds_stack=True)
    replay = commands.add_parser("replay", help="send dead-lettered requests through the pipeline again")
    replay.add_argument("--reason", metavar="CODE", help="only dead letters with this reason (e.g. UNKNOWN_METRIC)")
    replay.add_argument("--request-id", metavar="ID", help="only this request")
    replay.add_argument("--since", metavar="TIME", help="only rejected at or after this ISO 8601 time or epoch ms")
    replay.add_argument("--dry-run", action="store_true", help="count what matches; produce nothing")
    replay.set_defaults(run=_replay, finds_stack=True)


def _add_helper_commands(commands) -> None:
    """`catalog preset` and `monitoring prometheus-config`."""
    catalog = commands.add_parser("catalog", help="catalog helpers").add_subparsers(dest="catalog", required=True)
    preset = catalog.add_parser("preset", help="install a standard metric set in an org (iso15143-3)")
    preset.add_argument("name", help="the preset: iso15143-3 (ISO 15143-3 / AEMP 2.0 machine insights)")
    preset.add_argument("--url", help="the edge (default http://SLUICE_HTTP_HOST:SLUICE_HTTP_PORT)")
    preset.add_argument("--key", help="an API key with the write scope: installs in its org "
                        "(default: the platform-admin key, the default org)")
    preset.set_defaults(run=_preset, finds_stack=True)
    monitoring = commands.add_parser("monitoring", help="monitoring helpers").add_subparsers(
        dest="monitoring", required=True)
    prometheus = monitoring.add_parser(
        "prometheus-config", help="print a Prometheus config scraping the running stack's ports (the sink "
        "job only when the sinks run on their own), with Sluice's alert rules")
    prometheus.add_argument("--interval", default="15s",
                            help="scrape and rule evaluation interval, a Prometheus duration (default 15s)")
    prometheus.add_argument("--rules", metavar="FILE", action="append",
                            help="an alert rule file (repeatable; default: deploy/alerts.yml of this checkout)")
    prometheus.add_argument("--out", metavar="FILE", help="write the config here instead of printing it")
    prometheus.set_defaults(run=_prometheus_config, finds_stack=True)


def _add_import_command(commands) -> None:
    """`import`: historical readings from a file, through the edge."""
    imports = commands.add_parser("import", help="bulk-import historical readings (NDJSON, CSV, Parquet) "
                                  "through the edge, resumable")
    imports.add_argument("file", help="rows of thing_id, timestamp, metric, value (or one column per metric)")
    imports.add_argument("--format", choices=("ndjson", "csv", "parquet"), help="default: from the suffix")
    imports.add_argument("--url", help="the edge (default: SLUICE_HTTP_HOST:SLUICE_HTTP_PORT)")
    imports.add_argument("--key", help="API key with write scope (default: the local platform-admin key); "
                         "use a key of its own, so the import spends its own rate, not the devices'")
    imports.add_argument("--concurrency", type=int, default=4, help="batches in flight at once (default 4); "
                         "each waits for its verdict, so this bounds the import's share of the pipeline")
    imports.add_argument("--max-rate", type=float, default=0.0, metavar="VALUES_PER_S",
                         help="send at most this many values per second (default: no cap); on a busy "
                         "pipeline this is what leaves live ingest its share")
    imports.add_argument("--chunk-values", type=int, default=500_000,
                         help="readings read and grouped per thing at once (default 500,000)")
    imports.add_argument("--max-body-bytes", type=int, default=0,
                         help="largest batch body (default: SLUICE_MAX_BODY_BYTES less 4 KiB)")
    imports.add_argument("--restart", action="store_true", help="ignore the checkpoint; import from the start")
    imports.add_argument("--quiet", action="store_true", help="no progress bar")
    imports.set_defaults(run=_import, finds_stack=True)


if __name__ == "__main__":
    sys.exit(main())
