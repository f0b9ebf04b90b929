"""Every setting Sluice reads, declared once with its environment variable.

Settings are parsed once at start-up into a frozen dataclass and passed down;
no module reads the environment on its own.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


@dataclasses.dataclass(frozen=True)
class Settings:
    #: KAFKA_BOOTSTRAP_SERVERS: an external cluster; empty means "start the local broker".
    kafka_bootstrap: str = ""
    #: SLUICE_KAFKA_PORT: loopback port of the local broker (ignored with an external cluster).
    local_kafka_port: int = 9092
    #: SLUICE_TOPIC_PREFIX: physical topic names are prefix + logical name (raw, frames, ...).
    topic_prefix: str = "sluice."
    #: SLUICE_PARTITIONS: partitions of the raw, frames, results and deadletter topics.
    partitions: int = 4
    #: SLUICE_STATE_DIR: local state (broker log dirs, chDB data, generated admin key).
    state_dir: Path = Path(".sluice")
    #: CLICKHOUSE_URL: a ClickHouse server (http://user:pass@host:8123); empty means embedded chDB.
    clickhouse_url: str = ""
    #: SLUICE_DATABASE: the ClickHouse database holding Sluice's tables.
    database: str = "sluice"
    #: SLUICE_HTTP_HOST / SLUICE_HTTP_PORT: where the HTTP edge listens.
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    #: SLUICE_ADMIN_KEY: the platform-admin API key; generated on first start when empty.
    admin_key: str = ""
    #: SLUICE_MAX_BODY_BYTES: largest accepted request body.
    max_body_bytes: int = 1_048_576
    #: SLUICE_SINK_BATCH_MESSAGES / _BYTES / _MS: a sink inserts when any is reached.
    sink_batch_messages: int = 5000
    sink_batch_bytes: int = 16 * 1024 * 1024
    sink_batch_ms: int = 500
    #: SLUICE_RATE_LIMIT / SLUICE_RATE_BURST: ingest requests per second per API key
    #: (per edge instance), and the burst allowed above it; 0 turns the limit off.
    rate_limit: float = 500.0
    rate_burst: float = 1000.0
    #: SLUICE_MAX_WAIT_S: the longest a sync request (`Prefer: wait=N`) is held for its verdict.
    max_wait_s: float = 30.0
    #: SLUICE_PROCESSOR_BATCH: raw messages a processor takes at once.
    processor_batch: int = 500

    @classmethod
    def from_env(cls, **overrides: object) -> "Settings":
        values = dict(
            kafka_bootstrap=_env("KAFKA_BOOTSTRAP_SERVERS", ""),
            local_kafka_port=int(_env("SLUICE_KAFKA_PORT", "9092")),
            topic_prefix=os.environ.get("SLUICE_TOPIC_PREFIX", "sluice."),
            partitions=int(_env("SLUICE_PARTITIONS", "4")),
            state_dir=Path(_env("SLUICE_STATE_DIR", ".sluice")).absolute(),
            clickhouse_url=_env("CLICKHOUSE_URL", ""),
            database=_env("SLUICE_DATABASE", "sluice"),
            http_host=_env("SLUICE_HTTP_HOST", "127.0.0.1"),
            http_port=int(_env("SLUICE_HTTP_PORT", "8080")),
            admin_key=_env("SLUICE_ADMIN_KEY", ""),
            max_body_bytes=int(_env("SLUICE_MAX_BODY_BYTES", "1048576")),
            sink_batch_messages=int(_env("SLUICE_SINK_BATCH_MESSAGES", "5000")),
            sink_batch_bytes=int(_env("SLUICE_SINK_BATCH_BYTES", str(16 * 1024 * 1024))),
            sink_batch_ms=int(_env("SLUICE_SINK_BATCH_MS", "500")),
            processor_batch=int(_env("SLUICE_PROCESSOR_BATCH", "500")),
            rate_limit=float(_env("SLUICE_RATE_LIMIT", "500")),
            rate_burst=float(_env("SLUICE_RATE_BURST", "1000")),
            max_wait_s=float(_env("SLUICE_MAX_WAIT_S", "30")),
        )
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """The environment that makes a child process parse these same settings."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "SLUICE_KAFKA_PORT": str(self.local_kafka_port),
            "SLUICE_TOPIC_PREFIX": self.topic_prefix,
            "SLUICE_PARTITIONS": str(self.partitions),
            "SLUICE_STATE_DIR": str(self.state_dir),
            "CLICKHOUSE_URL": self.clickhouse_url,
            "SLUICE_DATABASE": self.database,
            "SLUICE_HTTP_HOST": self.http_host,
            "SLUICE_HTTP_PORT": str(self.http_port),
            "SLUICE_ADMIN_KEY": self.admin_key,
            "SLUICE_MAX_BODY_BYTES": str(self.max_body_bytes),
            "SLUICE_SINK_BATCH_MESSAGES": str(self.sink_batch_messages),
            "SLUICE_SINK_BATCH_BYTES": str(self.sink_batch_bytes),
            "SLUICE_SINK_BATCH_MS": str(self.sink_batch_ms),
            "SLUICE_PROCESSOR_BATCH": str(self.processor_batch),
            "SLUICE_RATE_LIMIT": str(self.rate_limit),
            "SLUICE_RATE_BURST": str(self.rate_burst),
            "SLUICE_MAX_WAIT_S": str(self.max_wait_s),
        }

    @property
    def embedded_warehouse(self) -> bool:
        return not self.clickhouse_url

    @property
    def chdb_path(self) -> Path:
        return self.state_dir / "chdb"
