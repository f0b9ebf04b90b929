"""The warehouse schema: DDL statements valid on both chDB and a ClickHouse server.

Today's shape of every table. Every statement is idempotent (IF NOT EXISTS), so
running them again is a no-op; warehouse.migrations runs them as migration 1 and
reshapes an older deployment's tables in later ones. Pure string building: nothing
here blocks; only ValueError is raised, for a database name that is not a plain
identifier.
"""

from __future__ import annotations

import re

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# Every table keeps a log of recent insert blocks, so a batch re-inserted with
# the same insert_deduplication_token is dropped even on a non-replicated
# server or chDB (where the window defaults to 0, i.e. no deduplication).
_DEDUP = "SETTINGS non_replicated_deduplication_window = 10000"

_TS = "DateTime64(3, 'UTC')"

# The rejects table's engine and sorting key, as system.tables spells them (warehouse.migrations
# rebuilds a table of an older shape).
REJECTS_ENGINE = "ReplacingMergeTree"
REJECTS_KEY = "org_id, request_id, item_index, reason, received_at"

_TABLES: dict[str, str] = {
    # One row per metric value. ReplacingMergeTree(version) collapses replays of
    # the same reading (same key, same version) and keeps a client's later
    # re-send (larger version) at merge time; readers must not rely on merges.
    "readings": f"""(
    org_id LowCardinality(String),
    thing_id String,
    metric_id LowCardinality(String),
    ts {_TS},
    data_type LowCardinality(String),
    value Float64,
    value_long Int64,
    value_string String,
    type_version_id LowCardinality(String),
    request_id String,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(ts)
ORDER BY (org_id, thing_id, metric_id, ts)
{_DEDUP}""",
    # Where each thing was (seed 000): one row per frame that carried a location.
    "locations": f"""(
    org_id LowCardinality(String),
    thing_id String,
    ts {_TS},
    latitude Float64,
    longitude Float64,
    accuracy_m Nullable(Float64),
    request_id String,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(ts)
ORDER BY (org_id, thing_id, ts)
{_DEDUP}""",
    "ingest_log": f"""(
    request_id String,
    org_id LowCardinality(String),
    thing_id String,
    route LowCardinality(String),
    status LowCardinality(String),
    http_status UInt16,
    frames_received UInt32,
    frames_ingested UInt32,
    metrics Array(String),
    errors String,
    duplicate_of String,
    received_at {_TS},
    processed_at {_TS},
    key_id String,
    stream String,
    report String
)
ENGINE = ReplacingMergeTree(processed_at)
ORDER BY (org_id, request_id)
{_DEDUP}""",
    # One row per judged item (dead letter): a request judged again (after a processor
    # crash, a rebalance, or a replay) writes the same key, and the latest judgement
    # (rejected_at) replaces it at merge time. A request's received_at never changes; it
    # keeps apart the raw messages that were no request at all (no request id).
    "rejects": f"""(
    request_id String,
    org_id LowCardinality(String),
    thing_id String,
    route LowCardinality(String),
    item_index Int32,
    reason LowCardinality(String),
    detail String,
    original String,
    received_at {_TS},
    rejected_at {_TS}
)
ENGINE = {REJECTS_ENGINE}(rejected_at)
ORDER BY ({REJECTS_KEY})
{_DEDUP}""",
    # Catalog mirrors: re-mirroring an entity writes a row with a later
    # updated_at, which replaces the older one; deletions are rows with deleted=1.
    "metric_definitions": f"""(
    org_id LowCardinality(String),
    metric_id String,
    name String,
    display_name String,
    description String,
    data_type LowCardinality(String),
    default_aggregation LowCardinality(String),
    unit_label String,
    enum_values Array(String),
    updated_at {_TS},
    deleted UInt8
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (org_id, metric_id)
{_DEDUP}""",
    # One row per thing-type *version*: readings point at a version, and each
    # version has its own metric list, so a new version must not replace an old one.
    "thing_types": f"""(
    org_id LowCardinality(String),
    thing_type_id String,
    version_id String,
    display_name String,
    description String,
    metric_ids Array(String),
    updated_at {_TS},
    deleted UInt8
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (org_id, thing_type_id, version_id)
{_DEDUP}""",
    "things": f"""(
    org_id LowCardinality(String),
    thing_id String,
    name String,
    place_id String,
    thing_type_id String,
    type_version_id String,
    manufacturer String,
    model String,
    properties String,
    updated_at {_TS},
    deleted UInt8
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (org_id, thing_id)
{_DEDUP}""",
    "places": f"""(
    org_id LowCardinality(String),
    place_id String,
    kind LowCardinality(String),
    name String,
    updated_at {_TS},
    deleted UInt8
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (org_id, place_id)
{_DEDUP}""",
    # Seed 002: where the records sink writes items, their JSON as text. It stores
    # nothing: stream_items_mv parses each item into stream_items' JSON column.
    "stream_items_input": f"""(
    org_id LowCardinality(String),
    stream LowCardinality(String),
    item_key String,
    item_index UInt32,
    received_at {_TS},
    request_id String,
    item String,
    version UInt64
)
ENGINE = Null""",
    # Every item pushed to a stream, one row each (its history). A replayed request
    # writes the same (key, received_at, request, index) rows, which merges collapse.
    "stream_items": f"""(
    org_id LowCardinality(String),
    stream LowCardinality(String),
    item_key String,
    item_index UInt32,
    received_at {_TS},
    request_id String,
    item JSON,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(received_at)
ORDER BY (org_id, stream, item_key, received_at, request_id, item_index)
{_DEDUP}""",
    # The latest item per (org, stream, item key), kept by stream_items_latest_mv: argMax
    # states by (version, request_id, item_index), so the last item of the last request
    # wins, and a replayed row changes nothing. Read it through the stream_items_latest view.
    "stream_items_latest_state": f"""(
    org_id LowCardinality(String),
    stream LowCardinality(String),
    item_key String,
    item_state AggregateFunction(argMax, JSON, Tuple(UInt64, String, UInt32)),
    request_id_state AggregateFunction(argMax, String, Tuple(UInt64, String, UInt32)),
    latest_received_at SimpleAggregateFunction(max, {_TS}),
    latest_version SimpleAggregateFunction(max, UInt64)
)
ENGINE = AggregatingMergeTree
ORDER BY (org_id, stream, item_key)""",
    "datasources": f"""(
    org_id LowCardinality(String),
    datasource_id String,
    name String,
    external_id String,
    description String,
    updated_at {_TS},
    deleted UInt8
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (org_id, datasource_id)
{_DEDUP}""",
    # Records of the data sources (seed 004), one row per record: the record as JSON (keys
    # sorted), its event time (`timestamp`, 1970 without one), and a key derived from its
    # content, so a re-send or replay replaces instead of duplicating.
    "datasource_records": f"""(
    org_id LowCardinality(String),
    datasource_id String,
    ts {_TS},
    record_key String,
    record_index UInt32,
    record String,
    request_id String,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(ts)
ORDER BY (org_id, datasource_id, ts, record_key)
{_DEDUP}""",
}

# Views, created after the tables they read: name → (kind, body); `{db}` is the database.
_VIEWS: dict[str, tuple[str, str]] = {
    # The item's text as ClickHouse's JSON type, strings kept as strings: by default the
    # JSON type reads "2026-04-06T10:30:00Z" as a DateTime (and gives it back changed).
    # A path twice would refuse the whole insert: the rulebook refuses such items first,
    # and skipping duplicates here keeps a missed case from stalling the sink.
    "stream_items_mv": ("MATERIALIZED VIEW", """TO {db}.stream_items AS
SELECT org_id, stream, item_key, item_index, received_at, request_id, CAST(item, 'JSON') AS item, version
FROM {db}.stream_items_input
SETTINGS input_format_try_infer_dates = 0, input_format_try_infer_datetimes = 0,
    type_json_skip_duplicated_paths = 1"""),
    "stream_items_latest_mv": ("MATERIALIZED VIEW", """TO {db}.stream_items_latest_state AS
SELECT org_id, stream, item_key,
    argMaxState(item, (version, request_id, item_index)) AS item_state,
    argMaxState(request_id, (version, request_id, item_index)) AS request_id_state,
    max(received_at) AS latest_received_at,
    max(version) AS latest_version
FROM {db}.stream_items
GROUP BY org_id, stream, item_key"""),
    # What analysts query: one row per item key, its latest item. No FINAL needed.
    "stream_items_latest": ("VIEW", """AS
SELECT org_id, stream, item_key,
    argMaxMerge(item_state) AS item,
    argMaxMerge(request_id_state) AS request_id,
    max(latest_received_at) AS received_at,
    max(latest_version) AS version
FROM {db}.stream_items_latest_state
GROUP BY org_id, stream, item_key"""),
}

#: The tables (and views) migrate() creates, in creation order.
TABLES: tuple[str, ...] = tuple(_TABLES) + tuple(_VIEWS)

# Columns added after a table was first released: an older deployment gains them in place.
_ADDED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ingest_log", "key_id String"),  # the per-key (per-connector) log of seed 002
    ("ingest_log", "stream String"),
    ("ingest_log", "report String"),  # a template request's processing report (JSON), else ""
)


def identifier(name: str) -> str:
    """Return `name` if it is a plain identifier ([A-Za-z_][A-Za-z0-9_]*).

    Raises ValueError otherwise. Database, table and column names are spliced
    into SQL, so only names that need no quoting are accepted.
    """
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain identifier: {name!r}")
    return name


def create_table(database: str, name: str, as_name: str | None = None) -> str:
    """The CREATE TABLE statement of table `name`, creating it as `as_name` when given."""
    return f"CREATE TABLE {identifier(database)}.{identifier(as_name or name)} {_TABLES[name]}"


def statements(database: str) -> list[str]:
    """The DDL that creates the database and every table in it, in order.

    Fully qualified (database.table), so it runs whatever the current database is.
    Raises ValueError for a database name that is not a plain identifier.
    """
    db = identifier(database)
    return [f"CREATE DATABASE IF NOT EXISTS {db}"] + [
        f"CREATE TABLE IF NOT EXISTS {db}.{name} {body}" for name, body in _TABLES.items()
    ] + [f"ALTER TABLE {db}.{table} ADD COLUMN IF NOT EXISTS {column}" for table, column in _ADDED_COLUMNS] + [
        f"CREATE {kind} IF NOT EXISTS {db}.{name} {body.format(db=db)}" for name, (kind, body) in _VIEWS.items()]
