"""Following a whole topic in a background thread: the mechanism behind every
in-memory view of a topic (the catalog, idempotency keys, verdicts).

No consumer group and no commits: each process reads every partition itself,
from the beginning (to rebuild a view) or from the end (to hear only what is new).

Broker loss is weathered: librdkafka reconnects and resumes fetching from where
the tail was, and anything unexpected in a turn of the loop is logged and retried
with backoff. The tail reports to the process's health registry (bus.health):
starting until caught up, then ok; dead if its thread ends on its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from bus.client_errors import FatalClientError, raise_if_fatal, replacing
from bus.health import health
from bus.logs import librdkafka_logger

log = logging.getLogger(__name__)


class TopicTail:
    """Hands every message of `topic` to `on_message`, in order within a partition.

    Ready once it has read up to where each partition ended when it started (at
    once when following from the end). `on_message` runs on the tail's thread
    and must not raise.
    """

    def __init__(self, bootstrap: str, topic: str, on_message: Callable[[Message], None], *, name: str,
                 from_beginning: bool = True, config: dict | None = None) -> None:
        self._topic = topic
        self._on_message = on_message
        self._from_beginning = from_beginning
        self._name = name
        self._config = {
            "bootstrap.servers": bootstrap,
            "group.id": f"sluice-{name}",  # required by the client; never joined, nothing committed
            "client.id": name,  # names the tail in librdkafka's log lines
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "logger": librdkafka_logger(),
            **(config or {}),
        }
        self._consumer = Consumer(self._config)
        self._health = health().component(name, stall_after=60.0)
        self._remaining: dict[int, int] = {}  # partition -> last offset to read before ready
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start following; returns at once (see wait_ready)."""
        self._thread.start()

    def wait_ready(self, timeout: float) -> bool:
        """Block until caught up (or positioned at the end); False on timeout."""
        return self._ready.wait(timeout)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._health.stopped()

    def _caught_up(self) -> None:
        self._ready.set()
        self._health.ok()

    def _positions(self) -> list[TopicPartition] | None:
        """Where to start in each partition; retries until the broker answers or stop()."""
        while not self._stop.is_set():
            try:
                metadata = self._consumer.list_topics(self._topic, timeout=5).topics[self._topic]
                if metadata.error is not None:
                    raise KafkaException(metadata.error)
                positions = []
                for partition in sorted(metadata.partitions):
                    low, high = self._consumer.get_watermark_offsets(TopicPartition(self._topic, partition),
                                                                     timeout=5)
                    if self._from_beginning:
                        positions.append(TopicPartition(self._topic, partition, OFFSET_BEGINNING))
                        if high > low:
                            self._remaining[partition] = high - 1
                    else:
                        positions.append(TopicPartition(self._topic, partition, high))
                return positions
            except KafkaException as exc:
                log.warning("%s: waiting for topic %s: %s", self._name, self._topic, exc)
                self._health.beat()
                self._stop.wait(1)
        return None

    def _run(self) -> None:
        try:
            positions = self._positions()
            if positions is None:
                return
            self._consumer.assign(positions)
            if not self._remaining:
                self._caught_up()
            delay = 0.2
            while not self._stop.is_set():
                try:
                    self._turn()
                    delay = 0.2
                except FatalClientError as exc:
                    self._replace_consumer(exc)
                except Exception:  # a tail that ends silently leaves its view stale for good
                    log.exception("%s: unexpected error; retrying in %.1fs", self._name, delay)
                    self._stop.wait(delay)
                    delay = min(delay * 2, 10.0)
        except BaseException as exc:
            self._health.dead(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self._consumer.close()
            if not self._stop.is_set():
                self._health.dead("the tail's thread ended")

    def _replace_consumer(self, exc: FatalClientError) -> None:
        """Go on from where the dead consumer was, with a new one (bus.client_errors)."""
        replacing(self._name, exc.error, log)
        positions = self._consumer.position(self._consumer.assignment())  # local: no broker asked
        try:
            self._consumer.close()
        except Exception:
            log.exception("%s: closing the dead consumer failed", self._name)
        self._consumer = Consumer(self._config)
        self._consumer.assign(positions)

    def _turn(self) -> None:
        # poll() returns at the first message (consume() would wait out its timeout
        # unless a full batch arrives: 200 ms on every sync reply), then drain.
        first = self._consumer.poll(0.2)
        self._health.beat()
        if first is None:
            return
        for message in [first, *self._consumer.consume(1000, timeout=0)]:
            if message.error():
                raise_if_fatal(message.error())
                if message.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("%s: %s (the client retries)", self._name, message.error())
                continue
            self._on_message(message)
            last = self._remaining.get(message.partition())
            if last is not None and message.offset() >= last:
                del self._remaining[message.partition()]
                if not self._remaining:
                    self._caught_up()
