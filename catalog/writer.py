"""Writes catalog entities to the compacted catalog topic, with read-your-writes.

`put` returns only after the broker acknowledged the record and this process's
own view has applied it, so the caller's next read sees its write.
"""

from __future__ import annotations

import time

import orjson
from confluent_kafka import KafkaException, Producer

import schemas
from bus.logs import librdkafka_logger
from catalog.view import CatalogView


class CatalogWriteError(RuntimeError):
    """The write was not acknowledged, or the view did not apply it in time."""


class CatalogWriter:
    def __init__(self, bootstrap: str, topic: str, view: CatalogView) -> None:
        self._topic = topic
        self._view = view
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 0,
                "logger": librdkafka_logger(),  # through logging, so an outage's repeats are collapsed
            }
        )

    def put(self, kind: str, entity_id: str, org_id: str, body: dict, timeout: float = 15.0) -> dict:
        """Write one entity; blocks until durable and visible in the view.

        Raises CatalogWriteError when Kafka or the view does not confirm in `timeout`.
        """
        record = {
            "kind": kind,
            "id": entity_id,
            "org_id": org_id,
            "body": orjson.dumps(body).decode(),
            "updated_at": int(time.time() * 1000),
        }
        self._write(f"{kind}/{entity_id}", schemas.encode(schemas.CATALOG_RECORD, record), timeout)
        return body

    def delete(self, kind: str, entity_id: str, timeout: float = 15.0) -> None:
        """Write a tombstone; blocks like `put`."""
        self._write(f"{kind}/{entity_id}", None, timeout)

    def _write(self, key: str, value: bytes | None, timeout: float) -> None:
        delivered: list = []
        self._producer.produce(
            self._topic, key=key.encode(), value=value, on_delivery=lambda e, m: delivered.append((e, m))
        )
        deadline = time.monotonic() + timeout
        while not delivered and time.monotonic() < deadline:
            self._producer.poll(0.05)
        if not delivered:
            raise CatalogWriteError("the catalog write was not acknowledged in time")
        error, message = delivered[0]
        if error is not None:
            raise CatalogWriteError(f"the catalog write failed: {error}")
        if not self._view.wait_applied(message.offset(), max(0.1, deadline - time.monotonic())):
            raise CatalogWriteError("the catalog view did not apply the write in time")

    def close(self) -> None:
        try:
            self._producer.flush(5)
        except KafkaException:
            pass
