"""Errors after which a Kafka client never works again, and how the loops recognise them.

librdkafka marks some errors fatal: a static group member fenced by another with
the same `group.instance.id` (it happens after a broker restart, when the member's
own rejoin replaced it), an idempotent producer that lost its sequence. The client
then delivers one `_FATAL` event and does nothing more: a consumer returns no
messages and holds no assignment, so it looks idle rather than broken. Every loop
checks each error it is handed with `is_fatal` and replaces its client.
"""

from __future__ import annotations

from confluent_kafka import KafkaError

from bus import metrics


class FatalClientError(Exception):
    """A Kafka client raised a fatal error: it must be closed and replaced (or the process restarted)."""

    def __init__(self, error: KafkaError) -> None:
        super().__init__(str(error))
        self.error = error


def is_fatal(error: KafkaError | None) -> bool:
    """True for an error after which the client is dead. The `_FATAL` event a consumer returns
    carries `fatal() == False` itself (confluent-kafka 2.16), so the code counts too."""
    return error is not None and (error.fatal() or error.code() == KafkaError._FATAL)


def raise_if_fatal(error: KafkaError | None) -> None:
    if is_fatal(error):
        raise FatalClientError(error)


def replacing(component: str, error: KafkaError, log) -> None:
    """Say (log, and sluice_kafka_client_replacements_total) that `component` replaces its client."""
    log.error("%s: the Kafka client failed for good (%s); closing it and starting a new one", component, error)
    metrics.CLIENT_REPLACEMENTS.labels(component).inc()
