"""Batches of a Faust stream's events that go as soon as nothing more is waiting.

Faust's `Stream.take_events(max_, within)` yields when `max_` events are buffered
or `within` has passed since its loop last went round, so at light load every
event waits for the next tick (10 ms: half a sync reply's budget). `batches`
yields as soon as the stream's queue is empty, or at `max_`: a lone request
goes at once, and under load, where events wait in the queue while a batch is
handled, batches still fill up. `within` stays as a backstop.

The acks are take's: the stream's own acks are off while batching, and a
batch's events are acked when the loop asks for the next batch or is left, so
the caller must not leave the loop mid-batch (processors.app exits instead),
except the events it holds back to ack itself once they are handled.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from faust.types import EventT, StreamT


async def batches(stream: StreamT, max_: int, within: float,
                  held: set[int] | None = None) -> AsyncIterator[list[EventT]]:
    """Lists of at most `max_` events of `stream`, each yielded once the stream's queue is empty.

    An event whose id() the caller put in `held` before asking for the next batch is not acked
    with its batch: the caller acks it later (`stream.ack(event)`), once it is handled; Faust
    commits only up to the first event not acked, so the ones after it wait for it."""
    held = held if held is not None else set()
    events: list[EventT] = []
    ready = asyncio.Event()  # the batch may go: full, or nothing more waiting
    room = asyncio.Event()  # the batch was handled: the drainer may add again
    room.set()
    queue = stream.channel.queue

    async def add(value):
        # Runs in the stream's drainer task, once per event, in order.
        await room.wait()
        events.append(stream.current_event)
        if len(events) >= max_ or queue.empty():
            ready.set()
        if len(events) >= max_:
            room.clear()  # never more than max_ in a batch
        return value

    acks = stream.enable_acks
    stream.enable_acks = False  # acked below, only once the batch is handled
    stream.add_processor(add)
    stream._enable_passive(stream.channel)
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(ready, timeout=within)
            if not events:
                continue
            room.clear()  # the drainer waits while the batch is out
            try:
                yield list(events)
            finally:
                for event in events:
                    if id(event) in held:
                        held.discard(id(event))
                    else:
                        await stream.ack(event)
                events.clear()
                ready.clear()
                room.set()
    finally:
        stream.enable_acks = acks
        stream._processors.remove(add)
