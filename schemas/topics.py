"""The topics of the pipeline: logical names, physical names, partitioning and configs.

Logical names are what code speaks of; physical names add a prefix, so several
deployments (or test sessions) can share one cluster.
"""

from __future__ import annotations

import dataclasses

CATALOG = "catalog"
RAW = "raw"
FRAMES = "frames"
RESULTS = "results"
DEADLETTER = "deadletter"
IDEMPOTENCY = "idempotency"
RECORDS = "records"
# The public ingest topic: what outside producers write with their own clients (docs/producers.md).
INGEST = "ingest"
# The integrations stage's state (a poll's cursor), keyed by integration id; its partitions are
# what the stage's instances share out through their consumer group (integrations/assignment.py).
INTEGRATIONS = "integrations"

# How long an Idempotency-Key is remembered (seed 002: 24 hours).
IDEMPOTENCY_WINDOW_MS = 24 * 3600 * 1000


@dataclasses.dataclass(frozen=True)
class TopicSpec:
    logical: str
    schema: str  # the Avro record its values carry
    compacted: bool = False
    single_partition: bool = False  # the catalog is one ordered log
    retention_ms: int | None = None  # None: keep forever (compacted) or 7 days


SPECS = (
    TopicSpec(CATALOG, "sluice.CatalogRecord", compacted=True, single_partition=True),
    TopicSpec(RAW, "sluice.RawEnvelope"),
    TopicSpec(FRAMES, "sluice.FrameBatch"),
    TopicSpec(RESULTS, "sluice.Verdict"),
    TopicSpec(DEADLETTER, "sluice.DeadLetter"),
    # Rows of the dialects' own tables (stream items, data-source records, ...).
    TopicSpec(RECORDS, "sluice.RecordBatch"),
    # First verdict per (org, Idempotency-Key): compacted, and expired an hour past the window.
    TopicSpec(IDEMPOTENCY, "sluice.Verdict", compacted=True, retention_ms=IDEMPOTENCY_WINDOW_MS + 3600 * 1000),
    # Not ours to encode: JSON, or Avro framed for a schema registry (schemas/avro/public/frames.avsc).
    TopicSpec(INGEST, "sluice.public.Frames"),
    # Each record a CatalogRecord of kind `integration_state` (body: the cursor), compacted.
    TopicSpec(INTEGRATIONS, "sluice.CatalogRecord", compacted=True),
)


@dataclasses.dataclass(frozen=True)
class Topics:
    """Physical topic names for one deployment."""

    prefix: str = "sluice."

    def name(self, logical: str) -> str:
        return f"{self.prefix}{logical}"

    @property
    def processors_group(self) -> str:
        """The processors' consumer group (the Faust app's id), which the edge's processor watch reads."""
        return f"{self.prefix}processors"

    @property
    def sink_groups(self) -> str:
        """The start of every sink's consumer group name (`{prefix}sink-readings`, …; sinks.warehouse_sinks)."""
        return f"{self.prefix}sink-"

    @property
    def catalog(self) -> str:
        return self.name(CATALOG)

    @property
    def raw(self) -> str:
        return self.name(RAW)

    @property
    def frames(self) -> str:
        return self.name(FRAMES)

    @property
    def results(self) -> str:
        return self.name(RESULTS)

    @property
    def deadletter(self) -> str:
        return self.name(DEADLETTER)

    @property
    def idempotency(self) -> str:
        return self.name(IDEMPOTENCY)

    @property
    def ingest(self) -> str:
        return self.name(INGEST)

    @property
    def integrations(self) -> str:
        return self.name(INTEGRATIONS)

    @property
    def integrations_group(self) -> str:
        """The integrations stage's consumer group: its members share the integrations out."""
        return f"{self.prefix}integrations"


# Room for everything a raw message carries besides the body: ids, the route, the
# Idempotency-Key, the content type (HTTP servers cap headers well below this)
# and Kafka's record framing. A dead letter wraps at most a whole raw message
# plus a bounded reason, so output topics get this much again.
ENVELOPE_ALLOWANCE = 64 * 1024

# Frames of one request are split into messages of at most this many bytes: well
# under any broker's default limit, and small enough that one request never
# dominates a sink's batch. A single reading larger than this travels alone.
FRAMES_MESSAGE_BUDGET = 256 * 1024


@dataclasses.dataclass(frozen=True)
class MessageLimits:
    """Largest message, in bytes, of each topic, derived from the edge's body limit.

    `raw`: the largest body the edge accepts, in its envelope, fits (a max-size
    body is 202, never 503). `output`: frames, results, dead letters and the
    rest; a dead letter of the largest raw message (undecodable ones are kept
    whole) fits. Producers' message.max.bytes and consumers' fetch sizes use these.
    """

    raw: int
    output: int
    frames_budget: int = FRAMES_MESSAGE_BUDGET

    @classmethod
    def for_body(cls, max_body_bytes: int) -> "MessageLimits":
        raw = max_body_bytes + ENVELOPE_ALLOWANCE
        return cls(raw=raw, output=raw + ENVELOPE_ALLOWANCE)

    def topic(self, spec: TopicSpec) -> int:
        # The ingest topic takes the same bodies as the raw topic, with less around them.
        return self.raw if spec.logical in (RAW, INGEST) else self.output


def topic_configs(spec: TopicSpec, limits: MessageLimits) -> dict[str, str]:
    """Broker-side configs each topic is created with (and existing topics are altered to)."""
    size = {"max.message.bytes": str(limits.topic(spec))}
    if spec.compacted and spec.retention_ms is not None:
        return {"cleanup.policy": "compact,delete", "retention.ms": str(spec.retention_ms),
                "min.compaction.lag.ms": "0", "segment.ms": "3600000", **size}
    if spec.compacted:
        # Keep every catalog entity forever; tombstones linger a day so every
        # service's view sees deletions before they are compacted away.
        return {
            "cleanup.policy": "compact",
            "min.compaction.lag.ms": "0",
            "delete.retention.ms": "86400000",
            "segment.ms": "3600000",
            **size,
        }
    return {"cleanup.policy": "delete", "retention.ms": str(7 * 86400000), **size}
