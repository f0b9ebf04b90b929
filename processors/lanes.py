"""The set-aside lane: an org whose requests cost much is judged beside the others, not before them.

The agents judge on the event loop, one request after another, so a request that computes
for its whole budget (a template fanning out over a large payload) would hold up every
request taken after it, whoever sent them. An org whose costliest recent request took more
than `threshold` CPU seconds (processors.budget.OrgCosts.largest) has its requests judged
on the lane's own thread instead, while the loop goes on taking and judging every other
org's batches. The two share the CPU (the interpreter hands its lock over every
`SWITCH_INTERVAL_S`), so another org's request waits a few switches, not a budget.

Order: while an org has requests in the lane its later ones go there too, and the lane
judges on one thread and sends in the order requests came, so one org's requests keep
their order. Durability is the caller's: a set-aside request's Kafka message must be acked
only once its task is done (processors.app holds it back from its batch's ack). Bounded: at
most `depth` requests wait in the lane; past that the batch waits for room, as every batch
waited before the lane.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from processors.budget import OrgCosts

# A request costlier than this (CPU seconds) sets its org's next requests aside: a typical
# request is well under 10 ms of judging; a whole 1 MB frames request about 50 ms.
DEFAULT_THRESHOLD_S = 0.1
DEFAULT_DEPTH = 64
# How often a thread holding the interpreter's lock hands it over (CPython's default is 5 ms):
# the loop's requests, each a few short runs between waits on the network, wait this long per run.
SWITCH_INTERVAL_S = 0.001


class Lane:
    def __init__(self, costs: OrgCosts, threshold: float = DEFAULT_THRESHOLD_S, depth: int = DEFAULT_DEPTH) -> None:
        self.costs, self.threshold, self.depth = costs, threshold, depth
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="set-aside")
        self._orgs: dict[str | None, int] = {}  # org -> its requests in the lane
        self._tasks: set[asyncio.Task] = set()
        self._last: asyncio.Task | None = None
        sys.setswitchinterval(SWITCH_INTERVAL_S)

    def takes(self, org: str | None) -> bool:
        """Whether `org`'s next request goes to the lane."""
        return org in self._orgs or (org is not None and self.costs.largest(org) > self.threshold)

    async def room(self) -> None:
        """Return once the lane has room for one more request."""
        while len(self._tasks) >= self.depth:
            await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)

    def run(self, judged: Awaitable[list], send: Callable[[list], Awaitable[None]], org: str | None) -> asyncio.Task:
        """A task that waits for `judged` (work submitted to `executor`, in order), then, once every
        earlier request of the lane is sent, sends its messages with `send`."""
        previous = self._last
        self._orgs[org] = self._orgs.get(org, 0) + 1

        async def judge_then_send() -> None:
            try:
                messages = await judged
                if previous is not None:
                    await asyncio.wait({previous})  # its failure is its own task's to report
                await send(messages)
            finally:
                left = self._orgs[org] - 1
                if left:
                    self._orgs[org] = left
                else:
                    del self._orgs[org]

        task = asyncio.ensure_future(judge_then_send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._last = task
        return task

    @property
    def waiting(self) -> int:
        return len(self._tasks)
