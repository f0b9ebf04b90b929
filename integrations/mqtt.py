"""An `mqtt` integration: a subscription to topic filters on the user's broker (MQTT 3.1.1 or 5,
TLS with `mqtts://`, username and password).

QoS 1 with a persistent session (clean session off, the session kept by the broker): a
message is acknowledged (PUBACK, paho's manual ack) only once its raw envelope is durable on
Kafka, in the order the messages arrived, so whatever the broker sent and this process did not
make durable — a crash, a Kafka outage, a takeover by another instance — is sent again when a
client with the same id connects. The client id is the integration's (`clientId`, default
`sluice-<integration id>`), whichever instance runs it. A message may thus be produced twice
(made durable, then the process died before the ack); its readings land on the same keys
(org, thing, metric, time), so ClickHouse holds each once.

paho reconnects by itself (1 s, doubling up to 30 s); a failed produce stops acknowledging and
marks the runner failed, and the stage starts a fresh one, whose session gets the rest again.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

import orjson
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import schemas
from catalog.integrations import message_body
from integrations.durable import DurableProducer
from integrations.envelope import raw_envelope
from integrations.status import RunnerStatus

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600  # MQTT 5: how long the broker keeps the session (and its queue) while we are away


def client_id(integration: dict) -> str:
    return integration["config"].get("clientId") or f"sluice-{integration['id']}"


class MqttRunner:
    def __init__(self, integration: dict, org_id: str, producer: DurableProducer, raw_topic: str,
                 catalog_offset: Callable[[], int]) -> None:
        self.integration, self.org_id = integration, org_id
        self.status = RunnerStatus()
        self.failed = False
        self._producer, self._raw_topic, self._catalog_offset = producer, raw_topic, catalog_offset
        self._key = integration["id"].encode()
        self._stopping = threading.Event()
        self._refused = False  # the broker refused the last connection (a bad password, say)
        config = integration["config"]
        self._v5 = config.get("protocol", "5") == "5"
        self._client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id(integration),
                                   clean_session=None if self._v5 else False,
                                   protocol=paho.MQTTv5 if self._v5 else paho.MQTTv311, manual_ack=True)
        secrets = integration.get("secrets", {})
        if config.get("username"):
            self._client.username_pw_set(config["username"], secrets.get("password"))
        self._url = urlsplit(config["url"])
        self._tls = None
        if self._url.scheme == "mqtts":  # the broker's certificate and name verified, by the CA given or the system's
            self._tls = ssl.create_default_context(cadata=config.get("caCertificate"))
            self._client.tls_set_context(self._tls)
        self._client.reconnect_delay_set(1, 30)
        self._client.on_connect = self._connected
        self._client.on_disconnect = self._disconnected
        self._client.on_connect_fail = self._connect_failed
        self._client.on_message = self._received

    def start(self) -> None:
        """Connect in the background; returns at once."""
        self.status.state = "connecting"
        properties = None
        if self._v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = SESSION_EXPIRY_S
        port = self._url.port or (8883 if self._url.scheme == "mqtts" else 1883)
        self._client.connect_async(self._url.hostname, port, self.integration["config"].get("keepAliveSeconds", 60),
                                   clean_start=False, properties=properties)
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect; blocks until paho's thread ended. Messages not yet acknowledged stay with the broker."""
        self._stopping.set()
        self._client.disconnect()
        self._client.loop_stop()

    def _connected(self, client, userdata, flags, reason_code, properties) -> None:
        self._refused = reason_code.is_failure
        if reason_code.is_failure:
            self.status.failed("receiving", f"the broker refused the connection: {reason_code}; retrying")
            return
        qos = self.integration["config"].get("qos", 1)
        client.subscribe([(topic, qos) for topic in self.integration["config"]["topics"]])
        self.status.state = "running"
        log.info("integration %s: connected to %s (session present: %s)", self.integration["id"],
                 self._url.hostname, flags.session_present)

    def _disconnected(self, client, userdata, flags, reason_code, properties) -> None:
        # After a refusal the disconnection says less than the refusal did: keep that.
        if not self._stopping.is_set() and not self._refused:
            self.status.failed("receiving", f"disconnected from the broker: {reason_code}; reconnecting",
                               state="connecting")

    def _connect_failed(self, client, userdata) -> None:
        # paho retries without saying why the connection failed: a connection of our own finds out
        # (an unknown CA, a name that does not resolve, a refused port), for the status.
        address = (self._url.hostname, self._url.port or (8883 if self._tls else 1883))
        try:
            with socket.create_connection(address, timeout=5) as sock:
                if self._tls is not None:
                    self._tls.wrap_socket(sock, server_hostname=address[0]).close()
            why = "the connection failed"
        except OSError as exc:
            why = str(exc) or type(exc).__name__
        self.status.failed("receiving", f"cannot connect to {address[0]}:{address[1]}: {why}; retrying",
                           state="connecting")

    def _received(self, client, userdata, message) -> None:
        self.status.messages_in += 1
        payload = message.payload
        try:
            orjson.loads(payload)
            is_json = True
        except orjson.JSONDecodeError:
            is_json = False
        headers = {}
        if self._v5 and message.properties is not None and hasattr(message.properties, "UserProperty"):
            headers = dict(message.properties.UserProperty)
        body = message_body(message.topic, headers, payload, is_json)
        envelope = raw_envelope(self.integration, self.org_id, body, self._catalog_offset())
        mid, qos = message.mid, message.qos
        try:
            self._producer.send(self._raw_topic, self._key, schemas.encode(schemas.RAW_ENVELOPE, envelope),
                                lambda error: self._durable(error, mid, qos))
        except Exception as exc:  # too large for the raw topic, say: refused, never retried
            self.status.failed("sending", f"message on {message.topic!r} not produced: {exc}")
            if qos and not self.failed:
                client.ack(mid, qos)

    def _durable(self, error, mid: int, qos: int) -> None:
        if error is not None:
            # Stop acknowledging: this message and every later one are sent again to a fresh session.
            self.failed = True
            self.status.failed("sending", f"the raw topic did not take a message: {error}")
            return
        if self.failed:
            return
        if qos:
            self._client.ack(mid, qos)
        self.status.succeeded()
