"""Avro frames through the ingest topic, with a real schema registry, produced the way a
user would (confluent-kafka's SerializingProducer and AvroSerializer); and a processor
SIGKILLed mid-stream leaves every reading exactly once."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time
import traceback

import fastavro
import httpx
import pytest
from confluent_kafka import SerializingProducer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import StringSerializer

from schemas.public import frames_schema_text
from tests.conftest import eventually, session_settings
from tests.kafka_fixture import free_port
from tests.seed import SEED_FRAMES, register_battery, register_battery_type
from tests.test_ingest_topic import dead_letter_reason, produce, readings, sql, verdict
from tests.registry_fixture import registry_log_tail
from tests.warehouse_probe import optimized

MESSAGES = 150
METRICS = 5


def start_stack(kafka_bootstrap, schema_registry, state_dir, **overrides):
    from sluice.stack import Stack

    stack = Stack(session_settings(kafka_bootstrap, state_dir, schema_registry_url=schema_registry,
                                   rate_limit=0.0, **overrides))
    stack.start()
    api = httpx.Client(base_url=stack.url, headers={"X-Api-Key": stack.settings.admin_key}, timeout=30)
    battery = register_battery(api, *register_battery_type(api))
    secret = api.post("/v2/api-keys", json={"name": "avro producer", "scopes": ["write"]}).json()["key"]
    return stack, api, battery, secret


@pytest.fixture(scope="module")
def avro_stack(kafka_bootstrap, schema_registry, tmp_path_factory):
    stack, api, battery, secret = start_stack(kafka_bootstrap, schema_registry, tmp_path_factory.mktemp("avro"))
    try:
        yield stack, api, battery, secret
    finally:
        api.close()
        stack.stop()


def avro_producer(settings, registry_url: str) -> SerializingProducer:
    """What a user writes: the shipped schema, the registry's serializer, the thing id as the key."""
    # confluent-kafka's registry client waits forever by default: a request the registry never
    # answered held a CI run's sender at its first message until the session ended. Bounded, the
    # client retries it (max.retries) and a registry that stays silent is an error with its reason.
    registry = SchemaRegistryClient({"url": registry_url, "timeout": 10})
    return SerializingProducer({
        "bootstrap.servers": settings.kafka_bootstrap, "acks": "all", "enable.idempotence": True,
        "key.serializer": StringSerializer("utf_8"),
        "value.serializer": AvroSerializer(registry, frames_schema_text()),
    })


def send(producer: SerializingProducer, topic: str, thing: str, secret: str, frames: dict) -> str:
    delivered = []
    producer.produce(topic, key=thing, value=frames, headers=[("sluice-api-key", secret)],
                     on_delivery=lambda error, message: delivered.append((error, message)))
    assert producer.flush(30) == 0
    error, message = delivered[0]
    assert error is None, error
    return f"kafka-{message.partition()}-{message.offset()}"


def test_the_processor_registers_the_public_schema_and_avro_frames_land(avro_stack, schema_registry):
    stack, api, battery, secret = avro_stack
    subject = f"{stack.settings.topic_prefix}ingest-value"
    registry = SchemaRegistryClient({"url": schema_registry})
    registered = eventually(lambda: subject in registry.get_subjects() and registry.get_latest_version(subject))
    assert "sluice.public" in registered.schema.schema_str
    # Registering on every start is idempotent: the same schema keeps its id and version.
    assert registry.register_schema(subject, Schema(frames_schema_text(), "AVRO")) == registered.schema_id
    assert registry.get_versions(subject) == [registered.version]

    producer = avro_producer(stack.settings, schema_registry)
    request_id = send(producer, f"{stack.settings.topic_prefix}ingest", battery, secret, SEED_FRAMES)
    found = eventually(lambda: verdict(api, request_id))
    assert (found["status"], found["framesIngested"], found["thingId"]) == ("ingested", 1, battery)
    eventually(lambda: readings(api, stack, battery) == 5)
    rows = sql(api, f"SELECT value FROM {stack.settings.database}.readings WHERE thing_id = '{battery}' "
                    "ORDER BY value")
    assert [r[0] for r in rows] == [1, 12.1, 52.3, 87.4, 98.1]


def test_an_unknown_schema_id_and_undecodable_avro_are_dead_letters_and_the_next_message_lands(
        avro_stack, schema_registry):
    stack, api, battery, secret = avro_stack
    headers = {"sluice-api-key": secret}
    registered = SchemaRegistryClient({"url": schema_registry}).register_schema(
        f"{stack.settings.topic_prefix}ingest-value",
        Schema(frames_schema_text(), "AVRO"))
    unknown = produce(stack.settings, b"\x00" + struct.pack(">I", 987_654_321) + b"\x02\x00", battery, headers)
    broken = produce(stack.settings, b"\x00" + struct.pack(">I", registered) + b"\xff\xff\xff\xff", battery, headers)
    producer = avro_producer(stack.settings, schema_registry)
    later = {"frames": [{"timestamp": 1718884900000, "metrics": {"moduleSoC": 80.0}}]}
    valid = send(producer, f"{stack.settings.topic_prefix}ingest", battery, secret, later)
    assert eventually(lambda: dead_letter_reason(api, stack, unknown)) == "UNKNOWN_SCHEMA"
    assert eventually(lambda: dead_letter_reason(api, stack, broken)) == "UNDECODABLE"
    assert eventually(lambda: verdict(api, valid))["status"] == "ingested"
    stack.check_alive()


@pytest.fixture()
def faulty(kafka_bootstrap, schema_registry, tmp_path):
    """A stack of its own, with small batches so a crash always leaves work uncommitted."""
    stack, api, battery, secret = start_stack(kafka_bootstrap, schema_registry, tmp_path,
                                              processor_batch=10, sink_batch_messages=20)
    try:
        yield stack, api, battery, secret
    finally:
        api.close()
        stack.stop()


def test_a_processor_killed_mid_stream_leaves_every_reading_exactly_once(faulty, schema_registry):
    stack, api, battery, secret = faulty
    producer = avro_producer(stack.settings, schema_registry)
    topic = f"{stack.settings.topic_prefix}ingest"
    progress: list[str] = []
    failed: list[str] = []

    def stream() -> None:
        try:
            for i in range(MESSAGES):
                frames = {"frames": [{"timestamp": 1718884800000 + i * 1000, "metrics": {
                    "status": i, "moduleSoC": i / 10, "moduleSoH": 99.0, "moduleVoltage": 52.0,
                    "moduleCurrent": 1.5}}]}
                progress.append(send(producer, topic, battery, secret, frames))
                time.sleep(0.01)
        except BaseException:
            # A CI run once lost this thread at its first message ("connection refused"): say
            # everything about it at once, not after the wait below times out.
            failed.append(traceback.format_exc() + diagnose(schema_registry, stack.settings.kafka_bootstrap))
            raise

    sender = threading.Thread(target=stream)
    sender.start()
    eventually(lambda: failed or len(progress) >= MESSAGES // 3, timeout=60)
    assert not failed, failed[0]
    stack.restart("processor", signal.SIGKILL)
    sender.join(120)
    assert len(progress) == MESSAGES

    expected = MESSAGES * METRICS
    eventually(lambda: readings(api, stack, battery) == expected, timeout=90, interval=0.5)
    verdicts = f"SELECT uniqExact(request_id) FROM {stack.settings.database}.ingest_log WHERE thing_id = '{battery}'"
    assert eventually(lambda: sql(api, verdicts) == [[MESSAGES]], timeout=30)
    time.sleep(2)  # nothing more trickles in later either
    assert readings(api, stack, battery) == expected
    stack.stop()  # chDB has one owner: the warehouse is read directly once the stack is down
    assert optimized(stack.settings, battery) == (expected, expected)  # merged, no copy is left over


def diagnose(registry_url: str, bootstrap: str) -> str:
    """What a failed send needs said: does the registry answer now, who listens on its port and the broker's."""
    url = httpx.URL(registry_url)
    try:
        answer = httpx.get(f"{registry_url}/subjects", timeout=5).status_code
    except httpx.HTTPError as exc:
        answer = repr(exc)
    ports = {url.port, int(bootstrap.rsplit(":", 1)[1])}
    try:
        listening = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True, timeout=10).stdout
        listening = "\n".join(line for line in listening.splitlines() if any(f":{p} " in line for p in ports))
    except (OSError, subprocess.SubprocessError) as exc:
        listening = repr(exc)
    return (f"\nthe registry {registry_url} answers now: {answer}\nlistening on {sorted(ports)}:\n{listening}"
            f"\nenvironment proxies: {({k: v for k, v in os.environ.items() if 'proxy' in k.lower()})}"
            f"\nthe registry's log ends:\n{registry_log_tail()}")


class Forwarder:
    """A TCP port that forwards to the registry once opened: the registry 'comes back'."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port, self.target = port, target
        self._server: socket.socket | None = None

    def open(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            sink.close()


def component_up(stack, name: str) -> str | None:
    """The processor's `sluice_component_up` for `name` ('1.0' / '0.0'), None when it reports none."""
    text = httpx.get(f"http://{stack.settings.http_host}:{stack.settings.processor_metrics_port}/metrics").text
    line = next((line for line in text.splitlines()
                 if line.startswith(f'sluice_component_up{{component="{name}"}}')), None)
    return line.split()[-1] if line else None


def test_an_unreachable_registry_holds_avro_messages_and_reports_failing_without_dead_letters(
        kafka_bootstrap, schema_registry, tmp_path):
    url = httpx.URL(schema_registry)
    forwarder = Forwarder(free_port(), (url.host, url.port))
    stack, api, battery, secret = start_stack(
        kafka_bootstrap, str(url.copy_with(host="127.0.0.1", port=forwarder.port)), tmp_path)
    try:
        registered = SchemaRegistryClient({"url": schema_registry}).register_schema(
            f"{stack.settings.topic_prefix}ingest-value", Schema(frames_schema_text(), "AVRO"))
        body = io.BytesIO()
        fastavro.schemaless_writer(body, fastavro.parse_schema(json.loads(frames_schema_text())), SEED_FRAMES)
        held = produce(stack.settings, b"\x00" + struct.pack(">I", registered) + body.getvalue(), battery,
                       {"sluice-api-key": secret})
        assert eventually(lambda: component_up(stack, "schema-registry lookup")) == "0.0"
        # Not the message's fault: no verdict, no dead letter; the raw topic is served meanwhile.
        assert api.post(f"/v2/thing/{battery}/data", json=SEED_FRAMES).status_code == 202
        eventually(lambda: readings(api, stack, battery) == 5)
        assert verdict(api, held) is None and dead_letter_reason(api, stack, held) is None
        forwarder.open()  # the registry is back: the held message is judged, once
        found = eventually(lambda: verdict(api, held))
        assert found["status"] == "ingested" and found["framesIngested"] == 1
        assert dead_letter_reason(api, stack, held) is None
        assert eventually(lambda: component_up(stack, "schema-registry lookup") is None)
        stack.check_alive()
    finally:
        forwarder.close()
        api.close()
        stack.stop()
