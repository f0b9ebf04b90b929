"""The in-memory view of the compacted catalog topic, kept in every service.

A TopicTail reads the catalog topic from the beginning and applies each record; the service reports ready once the view has caught up with the end of
the topic as it was at start. Writers wait on `wait_applied` for read-your-writes.
"""

from __future__ import annotations

import logging
import threading
from typing import Iterator

import orjson
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

import schemas
from catalog.resolution import ResolutionTable, build_table
from bus.tail import TopicTail

log = logging.getLogger(__name__)


class CatalogView:
    """Entities by (kind, id), with the indexes the stages need.

    Reads are plain dict lookups, safe from any thread (the applier thread
    replaces values, it never mutates a dict a reader holds).
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._entities: dict[tuple[str, str], tuple[str, dict]] = {}
        self._metric_names: dict[tuple[str, str], str] = {}  # (org, lower name) -> metric id
        self._key_hashes: dict[str, str] = {}  # secret hash -> api key id
        self._stream_names: dict[tuple[str, str], str] = {}  # (org, name) -> stream id
        self._external_ids: dict[tuple[str, str], str] = {}  # (org, data source externalId) -> id
        self._tables: dict[str, ResolutionTable] = {}
        self._applied = -1  # offset of the last applied record
        self._cond = threading.Condition()
        self._tail = TopicTail(bootstrap, topic, self._on_message, name="catalog-view")
        self._bootstrap, self._topic = bootstrap, topic
        self._end_reader: Consumer | None = None  # asks the broker where the topic ends (catch_up_to_end)
        self._end_lock = threading.Lock()

    # ----- lifecycle

    def start(self) -> None:
        self._tail.start()

    def wait_ready(self, timeout: float) -> bool:
        """Block until caught up with the topic's end as of start; False on timeout."""
        return self._tail.wait_ready(timeout)

    @property
    def ready(self) -> bool:
        return self._tail.ready

    @property
    def applied_offset(self) -> int:
        """Offset of the last applied catalog record (-1 before the first)."""
        return self._applied

    def wait_applied(self, offset: int, timeout: float = 10.0) -> bool:
        """Block until the record at `offset` has been applied; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._applied >= offset, timeout)

    def catch_up_to_end(self, timeout: float = 30.0) -> bool:
        """Block until the view has applied every record the catalog held when called (its
        end, asked of the broker); False on timeout. For a decision another service may
        have taken already, such as a processor inferring a data source's schema. Also False
        when the broker cannot say where the catalog ends: callers wait for the view, they do
        not fail for it."""
        with self._end_lock:
            if self._end_reader is None:
                self._end_reader = Consumer({"bootstrap.servers": self._bootstrap, "group.id": "sluice-catalog-end",
                                             "enable.auto.commit": False})
            try:
                _, high = self._end_reader.get_watermark_offsets(TopicPartition(self._topic, 0), timeout=timeout)
            except KafkaException as exc:
                log.warning("catalog view: could not ask where the catalog ends: %s", exc)
                return False
        return self.wait_applied(high - 1, timeout)

    def stop(self) -> None:
        self._tail.stop()
        with self._end_lock:
            if self._end_reader is not None:
                self._end_reader.close()
                self._end_reader = None

    def _on_message(self, message: Message) -> None:
        self._apply(message.key(), message.value())
        with self._cond:
            self._applied = message.offset()
            self._cond.notify_all()

    # ----- applying records

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        kind, _, entity_id = key.decode().partition("/")
        previous = self._entities.get((kind, entity_id))
        if previous is not None:
            self._unindex(kind, entity_id, *previous)
        if value is None:  # tombstone
            self._entities.pop((kind, entity_id), None)
            return
        try:
            record = schemas.decode(schemas.CATALOG_RECORD, value)
            body = orjson.loads(record["body"])
        except (schemas.SchemaMismatch, ValueError) as exc:
            log.error("catalog view: skipping unreadable record %s: %s", key, exc)
            return
        if body.get("deleted"):  # a soft delete: forgotten here, kept on the topic for the mirror
            self._entities.pop((kind, entity_id), None)
            return
        self._entities[(kind, entity_id)] = (record["org_id"], body)
        self._index(kind, entity_id, record["org_id"], body)

    def _index(self, kind: str, entity_id: str, org_id: str, body: dict) -> None:
        if kind == "metric" and "harborId" in body:
            return  # a harbor's cargo: named per harbor, resolved by its derived id, in no type version
        if kind == "metric":
            self._metric_names[(org_id, body["name"].lower())] = entity_id
        elif kind == "api_key" and not body.get("revoked"):
            self._key_hashes[body["hash"]] = entity_id
        elif kind == "stream":
            self._stream_names[(org_id, body["name"])] = entity_id
        elif kind == "datasource" and body.get("externalId"):
            self._external_ids[(org_id, body["externalId"])] = entity_id
        if kind in ("metric", "thing_type_version"):
            # Resolution tables depend on versions and metrics: rebuild lazily.
            self._tables = {}

    def _unindex(self, kind: str, entity_id: str, org_id: str, body: dict) -> None:
        if kind == "metric" and "harborId" in body:
            return
        if kind == "metric":
            self._metric_names.pop((org_id, body["name"].lower()), None)
        elif kind == "api_key":
            self._key_hashes.pop(body["hash"], None)
        elif kind == "stream":
            self._stream_names.pop((org_id, body["name"]), None)
        elif kind == "datasource" and body.get("externalId"):
            self._external_ids.pop((org_id, body["externalId"]), None)

    # ----- reads

    def get(self, kind: str, entity_id: str, org_id: str | None = None) -> dict | None:
        """The entity's body, or None if absent or (when org_id is given) another org's."""
        found = self._entities.get((kind, entity_id))
        if found is None or (org_id is not None and found[0] != org_id):
            return None
        return found[1]

    def org_of(self, kind: str, entity_id: str) -> str | None:
        found = self._entities.get((kind, entity_id))
        return found[0] if found else None

    def list(self, kind: str, org_id: str) -> Iterator[dict]:
        for (k, _), (org, body) in list(self._entities.items()):
            if k == kind and org == org_id:
                yield body

    def every(self, kind: str) -> Iterator[tuple[str, dict]]:
        """(org id, body) of every entity of `kind`, whichever its org (for a stage serving all orgs)."""
        for (k, _), (org, body) in list(self._entities.items()):
            if k == kind:
                yield org, body

    def metric_id_by_name(self, org_id: str, name: str) -> str | None:
        return self._metric_names.get((org_id, name.lower()))

    def stream_id_by_name(self, org_id: str, name: str) -> str | None:
        return self._stream_names.get((org_id, name))
    def datasource_by_external_id(self, org_id: str, external_id: str) -> dict | None:
        datasource_id = self._external_ids.get((org_id, external_id))
        return self.get("datasource", datasource_id, org_id) if datasource_id else None

    def api_key_by_hash(self, secret_hash: str) -> dict | None:
        key_id = self._key_hashes.get(secret_hash)
        return self.get("api_key", key_id) if key_id else None

    def resolution(self, type_version_id: str) -> ResolutionTable | None:
        """Name → metric table of a type version, or None if the version is unknown."""
        tables = self._tables
        table = tables.get(type_version_id)
        if table is None:
            version = self.get("thing_type_version", type_version_id)
            if version is None:
                return None
            metrics = {mid: body for mid in version["metricIds"] if (body := self.get("metric", mid))}
            table = build_table(version["metricIds"], metrics)
            tables[type_version_id] = table
        return table
