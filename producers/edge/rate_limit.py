"""Per-key request rate limits: a token bucket per API key, in each edge process.

The limit is per edge instance; behind a load balancer with N edges a key can
reach N times the rate (documented in the README).
"""

from __future__ import annotations

import math
import threading
import time


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: float) -> None:
        self._rate = rate_per_s
        self._burst = max(burst, 1.0)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._rate > 0

    def acquire(self, key: str) -> int:
        """Take one token for `key`: 0 when allowed, else the seconds to wait (Retry-After)."""
        if self._rate <= 0:
            return 0
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(key, (self._burst, now))
            tokens = min(self._burst, tokens + (now - at) * self._rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0
            self._buckets[key] = (tokens, now)
            return max(1, math.ceil((1 - tokens) / self._rate))
