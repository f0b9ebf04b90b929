"""A steady, bounded ingest load spread over several edges, as a fleet of small devices sends it."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import threading
import time
from urllib.parse import urlsplit

from bench.loadgen import Connection

METRICS = 5  # each request is one frame of the Battery type's five metrics
BASE_TS = 1718884800000
CONNECTIONS = 64  # requests in flight at most; each worker holds a keep-alive connection to each edge


@dataclasses.dataclass(frozen=True)
class Answer:
    number: int  # the request's number: its frame's timestamp is BASE_TS + number seconds
    edge: int  # index of the edge it was sent to
    sent_at: float  # monotonic
    answered_at: float
    status: int  # 0: no answer (the edge was unreachable or cut the connection)
    retry_after: str | None


class SteadyLoad:
    """Requests offered at `rate` per second, each a one-frame ingest request for `thing`, spread
    over the `urls` (the edges) by up to CONNECTIONS workers sharing one schedule (a request late
    for its slot, behind slow answers, goes as soon as a worker is free).

    Every request is sent until it is accepted (202), as a client must: after a 429/503 it waits its
    Retry-After (at most 1 s); when an edge does not answer, it tries the next one, as a load balancer
    would. Bounded: no new request after `stop()`, `max_s` seconds or `max_requests`; a request is
    given up after `give_up_s`. Every attempt is kept (`answers`), so a test can tell what clients
    saw and when. Runs an event loop in a thread of its own, with the bench's lean HTTP client
    (bench.loadgen): on two cores a general-purpose client takes the edge's CPU.
    """

    def __init__(self, urls: list[str], key: str, thing: str, rate: float = 250, max_s: float = 240,
                 max_requests: int = 60_000, give_up_s: float = 120) -> None:
        self.urls, self.key, self.thing = urls, key, thing
        self.rate, self.max_s, self.max_requests, self.give_up_s = rate, max_s, max_requests, give_up_s
        self.answers: list[Answer] = []
        self.accepted: list[int] = []
        self.given_up: list[int] = []
        self.started_at = self.stopped_at = 0.0
        self._next = 0  # the next request's number
        self._stop = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),), name="steady-load", daemon=True)

    def start(self) -> "SteadyLoad":
        self.started_at = time.monotonic()
        self._thread.start()
        return self

    def stop(self, timeout: float = 150) -> None:
        """No new requests; blocks until each in flight is accepted or given up."""
        self._stop.set()
        self._thread.join(timeout)
        self.stopped_at = time.monotonic()

    def wait_caught_up(self, timeout: float = 60) -> None:
        """Wait until the workers are back on schedule (less than 0.2 s behind): after a stall every
        worker was held by a slow answer, and the requests due meanwhile are still to be sent."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._behind() > self.rate / 5:
            time.sleep(0.05)

    def _behind(self) -> float:
        """Requests due by now that no worker has taken yet."""
        return (time.monotonic() - self.started_at) * self.rate - self._next

    def wait_accepted(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.accepted) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    @property
    def requests(self) -> int:
        """Distinct requests sent (however often each was tried)."""
        return len({a.number for a in self.answers})

    @property
    def refusals(self) -> list[Answer]:
        return [a for a in self.answers if a.status not in (0, 202)]

    @property
    def unanswered(self) -> list[Answer]:
        return [a for a in self.answers if a.status == 0]

    @property
    def achieved_rate(self) -> float:
        """Requests per second over the load's run."""
        return self.requests / max(1e-9, (self.stopped_at or time.monotonic()) - self.started_at)

    @property
    def longest_wait(self) -> float:
        return max((a.answered_at - a.sent_at for a in self.answers), default=0.0)

    def accepted_between(self, start: float, end: float) -> list[Answer]:
        """202s for requests sent after `start` and answered before `end` (monotonic)."""
        return [a for a in self.answers if a.status == 202 and a.sent_at > start and a.answered_at < end]

    def summary(self) -> str:
        waits = sorted(a.answered_at - a.sent_at for a in self.answers) or [0.0]
        statuses = sorted(collections.Counter(a.status for a in self.answers).items())
        per_edge = sorted(collections.Counter(a.edge for a in self.answers if a.status == 202).items())
        slowest = {status: max(a.answered_at - a.sent_at for a in self.answers if a.status == status)
                   for status, _ in statuses if status != 202}
        return (f"{self.requests} requests at {self.achieved_rate:.0f}/s ({len(self.accepted)} accepted; "
                f"202s per edge {dict(per_edge)}), answers by status {dict(statuses)}, wait p50 "
                f"{waits[len(waits) // 2] * 1000:.0f} ms, p99 {waits[int(len(waits) * 0.99)] * 1000:.0f} ms, "
                f"longest {waits[-1]:.1f} s"
                + "".join(f"; longest {status} {wait:.1f} s" for status, wait in slowest.items()))

    async def _run(self) -> None:
        await asyncio.gather(*(self._worker(k) for k in range(CONNECTIONS)))

    async def _worker(self, k: int) -> None:
        edges = [urlsplit(url) for url in self.urls]
        connections = [Connection(edge.hostname, edge.port) for edge in edges]
        heads = [b"POST /v2/thing/%s/data HTTP/1.1\r\nHost: %s\r\nX-Api-Key: %s\r\n"
                 b"Content-Type: application/json\r\nContent-Length: " % (
                     self.thing.encode(), edge.netloc.encode(), self.key.encode()) for edge in edges]
        edge = k % len(edges)
        try:
            while True:
                number, self._next = self._next, self._next + 1
                due = self.started_at + number / self.rate
                if self._stop.is_set() or number >= self.max_requests or due - self.started_at > self.max_s:
                    return
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                edge = await self._deliver(connections, heads, edge, number)
        finally:
            for connection in connections:
                connection.close()

    async def _deliver(self, connections: list[Connection], heads: list[bytes], edge: int, number: int) -> int:
        """Send request `number` until it is accepted or given up; returns the edge that answered last."""
        body = (b'{"frames":[{"timestamp":%d,"metrics":{"status":%d,"moduleSoC":%.1f,"moduleSoH":99.0,'
                b'"moduleVoltage":52.0,"moduleCurrent":1.5}}]}' % (BASE_TS + number * 1000, number, number / 10))
        first = time.monotonic()
        while time.monotonic() - first < self.give_up_s:
            sent = time.monotonic()
            try:
                status = await connections[edge].post(heads[edge] + b"%d\r\n\r\n" % len(body), body)
                retry_after = connections[edge].reply_header(b"retry-after")
            except (OSError, asyncio.IncompleteReadError, ValueError):
                connections[edge].close()
                status, retry_after = 0, None
            self.answers.append(Answer(number, edge, sent, time.monotonic(), status,
                                       retry_after.decode() if retry_after else None))
            if status == 202:
                self.accepted.append(number)
                return edge
            if status == 0:
                edge = (edge + 1) % len(connections)  # the next edge, as a load balancer would
                await asyncio.sleep(0.1)
            elif status in (429, 503):
                await asyncio.sleep(min(float(retry_after or 1), 1.0))
            else:  # not a refusal to retry: a test fails on it (it is in `answers`)
                break
        self.given_up.append(number)
        return edge
