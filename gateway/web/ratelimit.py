"""Token buckets, per key (a client address, an agency). In process memory: the one piece of
state that is not shared between gateway processes, so with N processes the effective limit
is up to N times the setting (documented in operations.md)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class TokenBuckets:
    def __init__(
        self,
        rate_per_minute: int,
        burst: int | None = None,
        now: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst if burst is not None else max(rate_per_minute, 1))
        self.now = now
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> int:
        """0 if allowed, else the seconds to wait before trying again."""
        if self.rate <= 0:
            return 0
        now = self.now()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            self._prune(now)
            return 0
        self._buckets[key] = (tokens, now)
        return max(1, math.ceil((1 - tokens) / self.rate))

    def _prune(self, now: float) -> None:
        # Keys are client-chosen: keep the table bounded, dropping buckets that are full again.
        if len(self._buckets) <= self.max_keys:
            return
        full_after = self.burst / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}
