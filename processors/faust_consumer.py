"""Faust's Kafka consumer, mended twice: a short fetch wait, and no commit past a message in flight.

The fetch wait. aiokafka keeps one fetch in flight per broker, and a fetch leaves out the
partitions whose records are still buffered. Once those have waited past its prefetch
backoff (0.1 s: the agent is busy with a batch), it fetches the other partitions alone (the
idle ingest topic, a raw partition already drained), and the broker holds such a fetch until
the wait runs out, which Faust fixes at 1.5 s. If the buffers run dry meanwhile, nothing
more can be fetched until it returns: with a backlog the processor paused for up to 1.5 s,
again and again (BENCHMARKS.md). A short wait bounds the pause; an idle processor pays for
it with one empty fetch per wait.

The commit. Faust commits the first run of consecutive acked offsets, but its guard against
a hole at the head of that run lets a hole of exactly one offset through (and every hole
while the committed offset is 0): a message still being judged at the committed offset, with
the next one acked, was committed past, and a crash then lost it (faust-streaming issue 606,
still open in 0.15.3). The processor acks a set-aside request's message late
(processors.lanes), so that hole is its everyday case. Here the acked offsets at or above the
lowest offset still in flight (delivered to a stream, not acked) are kept out of Faust's
reckoning until that message is acked; Faust's own gap handling (compacted offsets,
transaction markers) is unchanged below it.
"""

from __future__ import annotations

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

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

    _floors: dict[TP, int] | None = None

    def _filter_committable_offsets(self, tps):
        # One pass over the messages in flight per commit, not one per partition.
        self._floors = in_flight_floors(self._unacked_messages, self.app.consumer_generation_id)
        try:
            return super()._filter_committable_offsets(tps)
        finally:
            self._floors = None

    def _new_offset(self, tp: TP) -> int | None:
        """The offset to commit for `tp`, never past a message of it still in flight."""
        floors = self._floors
        if floors is None:
            floors = in_flight_floors(self._unacked_messages, self.app.consumer_generation_id)
        floor, acked = floors.get(tp), self._acked[tp]
        if floor is None or not acked or max(acked) < floor:
            return super()._new_offset(tp)
        later = [offset for offset in acked if offset >= floor]
        acked[:] = [offset for offset in acked if offset < floor]
        try:
            return super()._new_offset(tp) if acked else None
        finally:
            acked.extend(later)  # Faust sorts them again at its next reckoning


def in_flight_floors(unacked, generation: int) -> dict[TP, int]:
    """Each partition's lowest offset among the `unacked` messages of this `generation` of the
    group not acked yet. A message of an earlier generation is not waited for: the stream skips
    it, and everything past the committed offset is delivered again after a rebalance."""
    floors: dict[TP, int] = {}
    for message in list(unacked):
        if message.acked or message.generation_id != generation:
            continue
        if message.offset < floors.get(message.tp, message.offset + 1):
            floors[message.tp] = message.offset
    return floors


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with the consumer above."""

    Consumer = _Consumer
