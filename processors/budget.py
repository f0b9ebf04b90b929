"""A request's share of the processor: a CPU-time budget its rulebook checks as it works.

One processor judges every org's requests in turn, so a request that computes for a
minute (a template whose expressions fan out over a large payload) would hold up every
request behind it, whoever sent them. Past `cpu_seconds` of the judging thread's CPU
time, `check()` raises BudgetExceeded: a Rejection (422 BUDGET_EXCEEDED), so the request
gets its verdict and dead letter like any other refusal and the next request goes on.

Rulebooks whose work is linear in the body (bounded by the edge's body limit) need no
checks; the template mapper runs user-written JMESPath, whose cost is not, and
evaluates it through `BudgetedSearch`, which checks every 1,024 steps.

The budget is the thread's CPU time, so a garbage collection that runs between two checks
(a full one walks the whole process's heap) is charged to the request under way and can
carry it past its budget by that pause.
"""

from __future__ import annotations

import threading
import time

from jmespath.parser import ParsedResult
from jmespath.visitor import TreeInterpreter

from processors.outcome import Rejection

DEFAULT_CPU_SECONDS = 1.0


class BudgetExceeded(Rejection):
    def __init__(self, spent: float, limit: float) -> None:
        super().__init__(422, "BUDGET_EXCEEDED", f"the request needed more than its {limit:g} s of processing "
                         f"(stopped after {spent:.2f} s of CPU time); make the template's expressions simpler "
                         "or send fewer records per request")


class Budget:
    def __init__(self, cpu_seconds: float = DEFAULT_CPU_SECONDS) -> None:
        self.cpu_seconds = cpu_seconds
        self._started = time.thread_time()

    def check(self) -> None:
        """Raise BudgetExceeded once this thread spent more than the budget since it was made (~0.5 µs)."""
        spent = time.thread_time() - self._started
        if spent > self.cpu_seconds:
            raise BudgetExceeded(spent, self.cpu_seconds)


class BudgetedSearch(TreeInterpreter):
    """JMESPath's own tree interpreter, checking `budget` every 1,024 nodes it visits (every
    step of an evaluation, functions' expression arguments included, goes through visit)."""

    def __init__(self, budget: Budget) -> None:
        super().__init__()
        self._budget = budget
        self._steps = 0

    def visit(self, node, *args, **kwargs):
        self._steps += 1
        if not self._steps & 1023:
            self._budget.check()
        return super().visit(node, *args, **kwargs)

    def search(self, expression: ParsedResult, value: object) -> object:
        """What `expression.search(value)` returns, within the budget."""
        return self.visit(expression.parsed, value)


class OrgCosts:
    """The processor CPU each org's requests took lately, decaying by half every `half_life` s.

    A batch is judged cheapest org first (a stable sort: one org's requests keep their order),
    so an org whose requests burn their budget waits behind the others instead of in front of
    them: another org's request then waits for at most the one costly request already under way.
    """

    def __init__(self, half_life: float = 10.0, clock=time.monotonic) -> None:
        self._half_life = half_life
        self._clock = clock
        self._costs: dict[str, tuple[float, float]] = {}  # org -> (seconds, when)
        self._largest: dict[str, tuple[float, float]] = {}  # org -> (its costliest recent request, when)
        self._lock = threading.Lock()  # requests are charged from the agents' loop and from processors.lanes

    def cost(self, org: str | None) -> float:
        return self._decayed(self._costs.get(org))

    def largest(self, org: str | None) -> float:
        """The CPU seconds of the org's costliest request lately (decaying as `cost` does)."""
        return self._decayed(self._largest.get(org))

    def spent(self, org: str | None, seconds: float) -> None:
        with self._lock:
            now = self._clock()
            self._costs[org] = (self.cost(org) + seconds, now)
            self._largest[org] = (max(self.largest(org), seconds), now)
            if len(self._costs) > 10_000:  # forget the orgs whose cost has decayed to nothing
                self._costs = {o: c for o, c in self._costs.items() if self._decayed(c) > 1e-3}
                self._largest = {o: c for o, c in self._largest.items() if o in self._costs}

    def _decayed(self, entry: tuple[float, float] | None) -> float:
        if not entry or not entry[0]:
            return 0.0
        seconds, at = entry
        return seconds * 0.5 ** ((self._clock() - at) / self._half_life)

    def order(self, requests: list, org_of) -> list:
        """`requests` cheapest org first; as they were when no org cost anything lately."""
        if not self._costs:
            return requests
        # Each org's cost read once: it decays as the clock moves, so reading it again for a later request
        # of the same org would sort that one ahead of the org's earlier ones.
        costs: dict[str | None, float] = {}
        for request in requests:
            org = org_of(request)
            if org not in costs:
                costs[org] = self.cost(org)
        return sorted(requests, key=lambda request: costs[org_of(request)])
