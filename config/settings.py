"""Every setting Sluice reads, declared once: name, environment variable, default, doc.

Settings are parsed once at start-up into a frozen dataclass and passed down;
no module reads the environment on its own. Reading the environment
(`from_env`) and writing it back for child processes (`to_env`) are both
derived from the declarations below, so a new setting is one line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def setting(env: str, default: Any, doc: str, empty_ok: bool = False) -> Any:
    """Declare a setting read from environment variable `env`.

    An empty variable means the default, unless `empty_ok` (an empty topic prefix is a real choice).
    """
    return dataclasses.field(default=default, metadata={"env": env, "doc": doc, "empty_ok": empty_ok})


def _given(spec: dataclasses.Field, raw: str | None) -> str | None:
    """A variable's value, stripped; None when it is unset or empty (unless empty is a value)."""
    if raw is None or not (raw.strip() or spec.metadata["empty_ok"]):
        return None
    return raw.strip()


def _parse_bool(env: str, raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{env} must be true or false, not {raw!r}")


@dataclasses.dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = setting(
        "KAFKA_BOOTSTRAP_SERVERS", "", "An external cluster; empty means start the local broker.")
    local_kafka_port: int = setting(
        "SLUICE_KAFKA_PORT", 9092, "Loopback port of the local broker (ignored with an external cluster); its "
        "controller uses the next one. Node i of a local cluster uses this port + 2(i-1) and the one after it.")
    brokers: int = setting(
        "SLUICE_BROKERS", 1, "Nodes of the local Kafka cluster `sluice up` starts (`--brokers`), each a broker and a "
        "KRaft controller; topics get min(3, nodes) replicas and, with three, min.insync.replicas 2.")
    with_registry: bool = setting(
        "SLUICE_WITH_REGISTRY", False, "`sluice up` starts the local schema registry (Apicurio) when no "
        "SLUICE_SCHEMA_REGISTRY_URL is configured; `--with-registry` too.")
    registry_port: int = setting(
        "SLUICE_REGISTRY_PORT", 8081, "Loopback port of the local schema registry.")
    with_mqtt: bool = setting(
        "SLUICE_WITH_MQTT", False, "`sluice up` also starts a local MQTT broker (Mosquitto, which must be "
        "installed) for MQTT integrations; `--with-mqtt` too.")
    mqtt_port: int = setting("SLUICE_MQTT_PORT", 1883, "Loopback port of the local MQTT broker.")
    topic_prefix: str = setting(
        "SLUICE_TOPIC_PREFIX", "sluice.", "Physical topic names are prefix + logical name (raw, frames, ...).",
        empty_ok=True)
    partitions: int = setting(
        "SLUICE_PARTITIONS", 4, "Partitions of the raw, frames, results and deadletter topics.")
    ingest_partitions: int = setting(
        "SLUICE_INGEST_PARTITIONS", 0, "Partitions of the public ingest topic (outside producers write to it); "
        "0: as SLUICE_PARTITIONS.")
    replication_factor: int = setting(
        "SLUICE_REPLICATION_FACTOR", 0, "Replicas of each topic `sluice topics` (and `sluice up`) creates; 0: "
        "min(3, brokers in the cluster). Existing topics keep theirs.")
    min_insync_replicas: int = setting(
        "SLUICE_MIN_INSYNC_REPLICAS", 0, "`min.insync.replicas` of Sluice's topics: replicas that hold a write "
        "before it is acknowledged (producers use acks=all); 0: 2 for a topic of 3 or more replicas, else 1.")
    schema_registry_url: str = setting(
        "SLUICE_SCHEMA_REGISTRY_URL", "", "A Confluent-compatible schema registry's API base URL, for Avro values "
        "on the ingest topic (docs/producers.md); empty: the ingest topic takes JSON only.")
    state_dir: Path = setting(
        "SLUICE_STATE_DIR", Path(".sluice"), "Local state: broker log dirs, chDB data, generated admin key, logs.")
    clickhouse_url: str = setting(
        "CLICKHOUSE_URL", "", "A ClickHouse server (http://user:pass@host:8123); empty means embedded chDB.")
    database: str = setting("SLUICE_DATABASE", "sluice", "The ClickHouse database holding Sluice's tables.")
    http_host: str = setting("SLUICE_HTTP_HOST", "127.0.0.1", "Where the HTTP edge listens.")
    http_port: int = setting("SLUICE_HTTP_PORT", 8080, "The HTTP edge's port.")
    clickhouse_port: int = setting(
        "SLUICE_CLICKHOUSE_PORT", 8123, "The edge's ClickHouse-compatible HTTP interface (on SLUICE_HTTP_HOST), "
        "where ClickHouse clients query with a Sluice key as their password; 0 turns it off.")
    edge_workers: int = setting(
        "SLUICE_EDGE_WORKERS", 1,
        "Edge processes sharing the HTTP port; the first hosts the warehouse, the others forward reads to it.")
    admin_key: str = setting(
        "SLUICE_ADMIN_KEY", "", "The platform-admin API key; generated on first start when empty.")
    admin_key_sha256: str = setting(
        "SLUICE_ADMIN_KEY_SHA256", "",
        "The platform-admin key's SHA-256 (hex), for an edge that should not hold the secret itself.")
    max_body_bytes: int = setting("SLUICE_MAX_BODY_BYTES", 1_048_576, "Largest accepted ingest request body.")
    max_api_body_bytes: int = setting(
        "SLUICE_MAX_API_BODY_BYTES", 65_536, "Largest accepted body on every other route (catalog, keys, admin).")
    header_timeout_s: float = setting(
        "SLUICE_HEADER_TIMEOUT_S", 10.0, "A request's headers must arrive whole within this many seconds.")
    body_timeout_s: float = setting(
        "SLUICE_BODY_TIMEOUT_S", 30.0, "A request's body must arrive whole within this many seconds of its headers.")
    max_connections_per_ip: int = setting(
        "SLUICE_MAX_CONNECTIONS_PER_IP", 256, "Open connections one client IP may hold; 0 turns the cap off.")
    sink_batch_messages: int = setting(
        "SLUICE_SINK_BATCH_MESSAGES", 5000, "A sink inserts when this many messages are batched...")
    sink_batch_bytes: int = setting("SLUICE_SINK_BATCH_BYTES", 16 * 1024 * 1024, "...or this many bytes...")
    sink_batch_ms: int = setting("SLUICE_SINK_BATCH_MS", 500, "...or this many ms passed since the first.")
    rate_limit: float = setting(
        "SLUICE_RATE_LIMIT", 500.0, "Ingest requests per second per API key (per edge instance); 0 turns it off.")
    rate_burst: float = setting("SLUICE_RATE_BURST", 1000.0, "The burst allowed above the rate limit.")
    admit_backlog_s: float = setting(
        "SLUICE_ADMIT_BACKLOG_S", 15.0, "Seconds of drain allowed to wait in front of the processors or a sink; "
        "past it the edge sheds async ingest requests (503 with Retry-After), the keys above their fair share "
        "first, every async request past twice it. 0 turns shedding off.")
    max_wait_s: float = setting(
        "SLUICE_MAX_WAIT_S", 30.0, "The longest a sync request (`Prefer: wait=N`) is held for its verdict.")
    processor_batch: int = setting("SLUICE_PROCESSOR_BATCH", 500, "Raw messages a processor takes at once.")
    request_cpu_budget_s: float = setting(
        "SLUICE_REQUEST_CPU_BUDGET_S", 1.0, "The processor CPU time one request may take (a template's JMESPath "
        "over its payload); past it the request is a 422 BUDGET_EXCEEDED verdict and a dead letter, so it "
        "cannot hold up the requests of others.")
    sql_timeout_s: float = setting(
        "SLUICE_SQL_TIMEOUT_S", 30.0, "The deadline of every query run for a caller (analyst SQL, the read API), "
        "streaming of its answer included: ClickHouse's max_execution_time. 0: none.")
    sql_max_memory_bytes: int = setting(
        "SLUICE_SQL_MAX_MEMORY_BYTES", 1 << 30, "The memory one such query may take in ClickHouse "
        "(max_memory_usage). 0: none.")
    sql_max_result_rows: int = setting(
        "SLUICE_SQL_MAX_RESULT_ROWS", 10_000_000, "Rows an analyst query may answer (max_result_rows, "
        "result_overflow_mode 'throw': more is an error, never a silently shortened result). 0: none.")
    sql_max_result_bytes: int = setting(
        "SLUICE_SQL_MAX_RESULT_BYTES", 1 << 30, "Bytes (uncompressed, in the engine) an analyst query may answer "
        "(max_result_bytes, likewise). 0: none.")
    sql_rows_max_bytes: int = setting(
        "SLUICE_SQL_ROWS_MAX_BYTES", 16 << 20, "The largest answer of the admin SQL endpoint's `rows` format, one "
        "JSON document built whole before it is sent; a larger result is refused (the streamed formats are "
        "bounded by the result limits only).")
    sql_concurrency: int = setting(
        "SLUICE_SQL_CONCURRENCY", 2, "Analyst queries (admin SQL, `sluice sql`) one edge runs at once, on "
        "warehouse sessions of their own; one more is refused at once (429 with Retry-After), never queued.")
    instance_id: str = setting(
        "SLUICE_INSTANCE_ID", "", "A stable name for this service instance, unique among its peers: its "
        "consumer groups (processor, sinks) then use static membership, so a restarted instance gets its "
        "partitions back at once instead of after the session timeout. Empty: dynamic membership. "
        "`sluice up` names its children.")
    restart_backoff_s: float = setting(
        "SLUICE_RESTART_BACKOFF_S", 0.5, "`sluice up`: delay before restarting a dead child; doubles with "
        "each restart within the crash-loop window...")
    restart_max_backoff_s: float = setting("SLUICE_RESTART_MAX_BACKOFF_S", 30.0, "...up to this.")
    crash_loop_restarts: int = setting(
        "SLUICE_CRASH_LOOP_RESTARTS", 5, "`sluice up` gives up on a child (and exits non-zero) when it needed "
        "this many restarts...")
    crash_loop_window_s: float = setting("SLUICE_CRASH_LOOP_WINDOW_S", 120.0, "...within this many seconds.")
    liveness_timeout_s: float = setting(
        "SLUICE_LIVENESS_TIMEOUT_S", 30.0, "`sluice up` SIGKILLs (then restarts) a child whose heartbeat is "
        "older than this: a process wedged in native code, or whose watchdog fired but which cannot exit.")
    heartbeat_path: str = setting(
        "SLUICE_HEARTBEAT_PATH", "", "A file the service's watchdog touches every second while its loops are "
        "healthy (its supervisor reads it). `sluice up` sets one per child; empty: none.")
    exit_grace_s: float = setting(
        "SLUICE_EXIT_GRACE_S", 20.0, "After the watchdog asked the service to stop (a loop died or stalled), "
        "how long a graceful stop may take before the process exits hard.")
    log_repeat_window_s: float = setting(
        "SLUICE_LOG_REPEAT_WINDOW_S", 30.0, "Repeats of a warning or error within this window are counted, "
        "not logged, then summarised; 0 logs every one.")
    webhook_tolerance_s: float = setting(
        "SLUICE_WEBHOOK_TOLERANCE_S", 300.0, "A webhook integration's signature (X-Sluice-Signature) is refused "
        "when its time is further than this from the edge's clock; an integration's `toleranceSeconds` overrides "
        "it. Within it, a signature already accepted is refused as a replay.")
    integrations_session_timeout_ms: int = setting(
        "SLUICE_INTEGRATIONS_SESSION_TIMEOUT_MS", 6000, "How long the integrations stage's consumer group waits "
        "for a silent instance before giving its integrations to the others: the bound on a takeover after "
        "an instance dies (a restarted one with the same SLUICE_INSTANCE_ID gets them back at once).")
    integrations_metrics_port: int = setting(
        "SLUICE_INTEGRATIONS_METRICS_PORT", 9466, "Where the integrations stage serves its Prometheus metrics "
        "(`/metrics`, on the edge's host); 0: none.")
    integrations_status_interval_s: float = setting(
        "SLUICE_INTEGRATIONS_STATUS_INTERVAL_S", 5.0, "How often, at most, the integrations stage writes an "
        "integration's changed status (GET /v2/integrations/{id}/status) to the catalog.")
    processor_metrics_port: int = setting(
        "SLUICE_PROCESSOR_METRICS_PORT", 9464, "Where the processor serves its Prometheus metrics (`/metrics`, on "
        "the edge's host); 0: none.")
    sink_metrics_port: int = setting(
        "SLUICE_SINK_METRICS_PORT", 9465, "Where a standalone sink (`sluice sink`, with a ClickHouse server) "
        "serves its Prometheus metrics; 0: none. Embedded sinks report through the edge's `/metrics`.")

    @classmethod
    def from_env(cls, fallback: Mapping[str, str] | None = None, **overrides: object) -> "Settings":
        """Settings from the environment (empty variables mean the default), then `overrides`.

        `fallback` holds values by variable name for the variables the environment leaves
        unset (or empty): what a running stack recorded, beneath what the shell sets.
        """
        values: dict[str, object] = {}
        for spec in dataclasses.fields(cls):
            raw = _given(spec, os.environ.get(spec.metadata["env"]))
            if raw is None and fallback:
                raw = _given(spec, fallback.get(spec.metadata["env"]))
            if raw is None:
                continue
            kind = type(spec.default)
            if isinstance(spec.default, Path):
                values[spec.name] = Path(raw).absolute()
            elif isinstance(spec.default, bool):  # bool("false") would be True
                values[spec.name] = _parse_bool(spec.metadata["env"], raw)
            else:
                values[spec.name] = kind(raw)
        if "state_dir" not in values:
            values["state_dir"] = Path(cls.state_dir).absolute()
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """The environment that makes a child process parse these same settings."""
        return {spec.metadata["env"]: str(getattr(self, spec.name)) for spec in dataclasses.fields(self)}

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """(environment variable, default, doc) of every setting, for the docs and `--help`."""
        return [(f.metadata["env"], str(f.default), f.metadata["doc"]) for f in dataclasses.fields(cls)]

    @property
    def platform_key_hash(self) -> str:
        """The SHA-256 the platform-admin key must match; empty: no platform-admin key."""
        if self.admin_key_sha256:
            return self.admin_key_sha256.lower()
        return hashlib.sha256(self.admin_key.encode()).hexdigest() if self.admin_key else ""

    @property
    def starts_local_registry(self) -> bool:
        """`sluice up` runs its own schema registry: asked to, and no registry is configured (that one wins)."""
        return self.with_registry and not self.schema_registry_url

    @property
    def embedded_warehouse(self) -> bool:
        return not self.clickhouse_url

    @property
    def chdb_path(self) -> Path:
        return self.state_dir / "chdb"
