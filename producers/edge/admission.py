"""Whether an async ingest request is admitted, given how far behind the pipeline is: the pure rule.

The view (bus.backlog_watch) says how many seconds of drain wait in front of the stage
furthest behind. Against the bound `SLUICE_ADMIT_BACKLOG_S`:
- at or under the bound, everything is admitted;
- over it, a key whose share of the recently accepted bytes is at least the fair share
  (1/N of the keys that sent lately) is shed: the heaviest keys first, while the lighter
  ones go on. With two keys offering 4:1 the heavy one is shed until it has accepted no
  more than the light one, so the light one keeps what it offers;
- past twice the bound (or a stage that drains nothing for that long), every async request
  is shed: the lighter keys too would only grow a backlog that is not moving.
A shed request is told to come back when the backlog should be back at the bound
(`Retry-After`: the seconds over it, 1 to 60).

Shares decay with a half-life of a few seconds, so a key that was shed soon weighs less
and is admitted again: under a lasting overload the keys converge to equal accepted bytes
(max-min fairness), not to "the heavy key gets nothing".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bus.backlog_watch import Backlog

HALF_LIFE_S = 5.0  # how fast a key's accepted bytes are forgotten
REQUEST_COST_BYTES = 512  # what a request costs beside its body (HTTP, auth, envelope, produce)
MAX_RETRY_AFTER_S = 60


@dataclass(frozen=True)
class Shed:
    reason: str  # "heavy_key" (over the bound, above its fair share) or "backlog" (past twice the bound)
    retry_after: int  # seconds
    backlog: Backlog


class KeyShares:
    """Each key's recently accepted bytes, decaying exponentially, and their total."""

    def __init__(self, half_life_s: float = HALF_LIFE_S) -> None:
        self._half_life_s = half_life_s
        self._keys: dict[str, tuple[float, float]] = {}  # key → (bytes, as of)
        self._total = (0.0, 0.0)
        self._swept_at = 0.0

    def _decayed(self, entry: tuple[float, float], now: float) -> float:
        amount, at = entry
        return amount * 0.5 ** ((now - at) / self._half_life_s)

    def add(self, key: str, amount: float, now: float) -> None:
        self._keys[key] = (self._decayed(self._keys.get(key, (0.0, now)), now) + amount, now)
        self._total = (self._decayed(self._total, now) + amount, now)
        if now - self._swept_at > self._half_life_s:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        # A key silent for 4 half-lives weighs 1/16 of what it did: it no longer counts among the senders.
        self._keys = {k: e for k, e in self._keys.items() if now - e[1] < 4 * self._half_life_s}
        self._swept_at = now

    def share(self, key: str, now: float) -> tuple[float, int]:
        """(the key's share of the recently accepted bytes, how many keys sent lately)."""
        entry = self._keys.get(key)
        total = self._decayed(self._total, now)
        if entry is None or total <= 0:
            return 0.0, len(self._keys)
        return self._decayed(entry, now) / total, len(self._keys)


def retry_after(backlog_s: float, bound_s: float) -> int:
    """The seconds until the backlog should be back at the bound, 1 to MAX_RETRY_AFTER_S."""
    return max(1, math.ceil(min(MAX_RETRY_AFTER_S, backlog_s - bound_s)))


class Admission:
    def __init__(self, bound_s: float, half_life_s: float = HALF_LIFE_S) -> None:
        """`bound_s`: the seconds of drain allowed to wait behind the edge; 0 admits everything."""
        self.bound_s = bound_s
        self.shares = KeyShares(half_life_s)

    @property
    def enabled(self) -> bool:
        return self.bound_s > 0

    def decide(self, key: str, backlog: Backlog | None, now: float) -> Shed | None:
        """None to admit an async request of `key`, else why it is shed. `backlog` None: no fresh view, admit."""
        if not self.enabled or backlog is None or backlog.seconds <= self.bound_s:
            return None
        wait = retry_after(backlog.seconds, self.bound_s)
        if backlog.seconds > 2 * self.bound_s:
            return Shed("backlog", wait, backlog)
        share, senders = self.shares.share(key, now)
        if senders and share >= 1 / senders:
            return Shed("heavy_key", wait, backlog)
        return None

    def accepted(self, key: str, body_bytes: int, now: float) -> None:
        """Count a request of `key` the edge accepted (its body's bytes)."""
        self.shares.add(key, body_bytes + REQUEST_COST_BYTES, now)
