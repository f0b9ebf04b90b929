"""The set-aside lane (processors.lanes), without services: which orgs it takes, that it
sends in the order requests came whatever order their judging ends in, and its bound."""

from __future__ import annotations

import asyncio

from processors.budget import OrgCosts
from processors.lanes import Lane


def test_it_takes_an_org_whose_recent_request_was_costly_and_keeps_it_while_it_has_requests_there():
    now = [0.0]
    costs = OrgCosts(half_life=10, clock=lambda: now[0])
    lane = Lane(costs, threshold=0.1)
    costs.spent("busy", 0.05)
    costs.spent("busy", 0.05)  # much in all, each cheap: judged with the others
    costs.spent("costly", 0.3)
    assert not lane.takes("busy") and lane.takes("costly") and not lane.takes(None)
    now[0] = 30  # 0.3 s halved three times: below the threshold, it goes back to the others
    assert not lane.takes("costly")

    async def scenario() -> None:
        gate = asyncio.Event()

        async def judged() -> list:
            await gate.wait()
            return []

        async def send(messages: list) -> None:
            pass

        task = lane.run(judged(), send, "costly")
        assert lane.takes("costly")  # its later requests follow the one still there
        gate.set()
        await task
        assert not lane.takes("costly")

    asyncio.run(scenario())


def test_requests_are_sent_in_the_order_they_came_whichever_is_judged_first():
    async def scenario() -> list[str]:
        lane = Lane(OrgCosts(), threshold=0.1)
        sent: list[str] = []
        first_judged, second_judged = asyncio.Event(), asyncio.Event()

        async def judged(name: str, gate: asyncio.Event) -> list:
            await gate.wait()
            return [name]

        async def send(messages: list) -> None:
            sent.extend(messages)

        first = lane.run(judged("first", first_judged), send, "org_a")
        second = lane.run(judged("second", second_judged), send, "org_a")
        second_judged.set()
        await asyncio.sleep(0.01)
        assert sent == []  # the second waits for the first to be sent
        first_judged.set()
        await asyncio.gather(first, second)
        return sent

    assert asyncio.run(scenario()) == ["first", "second"]


def test_room_waits_while_the_lane_is_full():
    async def scenario() -> None:
        lane = Lane(OrgCosts(), threshold=0.1, depth=2)
        gate = asyncio.Event()

        async def judged() -> list:
            await gate.wait()
            return []

        async def send(messages: list) -> None:
            pass

        tasks = [lane.run(judged(), send, "org_a") for _ in range(2)]
        waiting = asyncio.ensure_future(lane.room())
        await asyncio.sleep(0.01)
        assert not waiting.done() and lane.waiting == 2
        gate.set()
        await asyncio.wait_for(waiting, 1)
        await asyncio.gather(*tasks)

    asyncio.run(scenario())
