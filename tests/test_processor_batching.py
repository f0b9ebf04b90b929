"""The agent's batches (processors.batching), on a real Faust agent fed through Faust's own
test context: a lone event goes without waiting out the window, events that arrive while a
batch is handled form the next one, and a batch is acked only once it is handled (what the
processor's durability rests on: an event acked early is committed, and lost by a crash)."""

import asyncio

import faust

from processors.batching import batches

WINDOW_S = 60  # far beyond every wait below: a batch that waited for it would fail the test
MAX = 10


def run_agent(scenario) -> list[tuple[str, list[bytes]]]:
    """Run `scenario(put, log, release)` against an agent that batches and holds each batch
    until released; returns the log of batches, acks and handled batches in order."""
    app = faust.App("batching-test", web_enabled=False, store="memory://")
    log: list[tuple[str, list[bytes]]] = []
    release = asyncio.Event()

    @app.agent(app.topic("raw", value_serializer="raw"))
    async def agent(stream):
        ack = stream.ack

        async def logged_ack(event):
            log.append(("ack", [event.value]))
            return await ack(event)

        stream.ack = logged_ack
        async for events in batches(stream, MAX, within=WINDOW_S):
            values = [event.value for event in events]
            log.append(("batch", values))
            await release.wait()
            release.clear()
            log.append(("handled", values))

    async def main() -> None:
        async with agent.test_context() as running:
            async def put(value: bytes) -> None:
                await running.put(value, wait=False)

            await asyncio.wait_for(scenario(put, log, release), 10)

    asyncio.run(main())
    return log


async def until(condition) -> None:
    while not condition():
        await asyncio.sleep(0.001)


def test_a_lone_event_is_batched_without_waiting_for_the_window():
    async def scenario(put, log, release):
        await put(b"a")
        await until(lambda: log)  # within the test's 10 s, against a 60 s window
        release.set()

    assert run_agent(scenario)[0] == ("batch", [b"a"])


def test_a_batch_is_acked_only_once_handled_and_later_events_wait_for_the_next():
    async def scenario(put, log, release):
        await put(b"a")
        await until(lambda: log)
        await put(b"b")
        await put(b"c")
        await asyncio.sleep(0.05)  # they arrive while the first batch is handled
        assert log == [("batch", [b"a"])]  # not acked, and not added to the batch out
        release.set()
        await until(lambda: ("batch", [b"b", b"c"]) in log)
        release.set()
        await until(lambda: ("ack", [b"c"]) in log)

    assert run_agent(scenario) == [
        ("batch", [b"a"]), ("handled", [b"a"]), ("ack", [b"a"]),
        ("batch", [b"b", b"c"]), ("handled", [b"b", b"c"]), ("ack", [b"b"]), ("ack", [b"c"]),
    ]


def test_a_batch_holds_at_most_max_events():
    async def scenario(put, log, release):
        await put(b"first")
        await until(lambda: log)
        for i in range(2 * MAX + 5):
            await put(b"%d" % i)
        for _ in range(4):
            release.set()
            await asyncio.sleep(0.05)

    sizes = [len(values) for kind, values in run_agent(scenario) if kind == "batch"]
    assert max(sizes) == MAX and sum(sizes) == 2 * MAX + 6


def test_an_event_held_back_is_acked_by_its_caller_not_with_its_batch():
    # processors.app holds back a request set aside in processors.lanes until its outputs are acknowledged.
    app = faust.App("batching-held-test", web_enabled=False, store="memory://")
    log: list[tuple[str, bytes]] = []

    @app.agent(app.topic("raw", value_serializer="raw"))
    async def agent(stream):
        ack = stream.ack

        async def logged_ack(event):
            log.append(("ack", event.value))
            return await ack(event)

        stream.ack = logged_ack
        held: set[int] = set()
        kept = []
        async for events in batches(stream, MAX, within=WINDOW_S, held=held):
            for event in events:
                log.append(("judged", event.value))
                if event.value == b"slow":
                    held.add(id(event))
                    kept.append(event)
                if event.value == b"last":
                    for slow in kept:  # its work done: the caller acks it
                        await stream.ack(slow)

    async def main() -> None:
        async with agent.test_context() as running:
            for value in (b"a", b"slow", b"b"):
                await running.put(value, wait=False)
            await until(lambda: ("ack", b"b") in log)
            await running.put(b"last", wait=False)
            await until(lambda: ("ack", b"last") in log)

    asyncio.run(asyncio.wait_for(main(), 10))
    acks = [value for what, value in log if what == "ack"]
    assert acks[:2] == [b"a", b"b"], log  # its batch-mates went on without it
    assert acks[2:] == [b"slow", b"last"], log
    assert log.index(("ack", b"slow")) > log.index(("judged", b"last")), log
