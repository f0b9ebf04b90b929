"""Faust's Kafka consumer with a short fetch wait.

Why: aiokafka keeps one fetch in flight per broker, and a fetch leaves out the
partitions whose records are still buffered. Once those have waited past its
prefetch backoff (0.1 s: the agent is busy with a batch), it fetches the other
partitions alone (the idle ingest topic, a raw partition already drained), and
the broker holds such a fetch until the wait runs out, which Faust fixes at
1.5 s. If the buffers run dry meanwhile, nothing more can be fetched until it
returns: with a backlog the processor paused for up to 1.5 s, again and again
(BENCHMARKS.md). A short wait bounds the pause; an idle processor pays for it
with one empty fetch per wait.
"""

from __future__ import annotations

from faust.transport.drivers import aiokafka as faust_aiokafka

FETCH_MAX_WAIT_MS = 50


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport):
        consumer = super()._create_worker_consumer(transport)
        # Faust passes the wait as a constant and has no setting for it; aiokafka reads it at start().
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport, its consumer waiting at most FETCH_MAX_WAIT_MS for data."""

    Consumer = _Consumer
