"""The local schema registry: a real Apicurio Registry speaking the Confluent API on loopback."""

from __future__ import annotations

import json

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from sluice.local_registry import LocalRegistry, LocalRegistryError
from tests.kafka_fixture import free_port

FRAME_SCHEMA = json.dumps({
    "type": "record", "name": "Probe", "namespace": "sluice.test",
    "fields": [{"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-millis"}}],
})


def test_a_registered_schema_reads_back_by_id(schema_registry):
    client = SchemaRegistryClient({"url": schema_registry})
    schema_id = client.register_schema("probe-value", Schema(FRAME_SCHEMA, "AVRO"))
    fresh = SchemaRegistryClient({"url": schema_registry})  # no cache: asks the registry
    assert json.loads(fresh.get_schema(schema_id).schema_str) == json.loads(FRAME_SCHEMA)
    assert "probe-value" in fresh.get_subjects()


def test_a_restarted_registry_keeps_its_schema_ids(tmp_path):
    # Producers and processors cache schema ids: after a restart an id must still mean the same schema.
    registry = LocalRegistry(tmp_path, port=free_port())
    with registry:
        schema_id = SchemaRegistryClient({"url": registry.url}).register_schema(
            "probe-value", Schema(FRAME_SCHEMA, "AVRO"))
    with registry:
        client = SchemaRegistryClient({"url": registry.url})
        assert json.loads(client.get_schema(schema_id).schema_str) == json.loads(FRAME_SCHEMA)
        other = client.register_schema("other-value", Schema(FRAME_SCHEMA.replace("Probe", "Other"), "AVRO"))
        assert other != schema_id


def test_a_taken_port_is_a_clear_error(tmp_path):
    import socket

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(LocalRegistryError, match=f"127.0.0.1:{port} is already in use"):
            LocalRegistry(tmp_path, port=port).start()
