"""A per-tenant token bucket (``limits.rate_limit_per_second``, ``limits.rate_limit_burst``).

Per process: with several replicas each enforces its own share. Refusals record nothing (no
receipt), so the limiter also protects the ledger from being flooded with denials.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """Allow ``rate`` calls per second per key, with bursts of up to ``burst``.

    Args:
        rate: Tokens added per second; ``0`` disables limiting.
        burst: Bucket capacity.
        clock: Monotonic seconds (injectable for tests).
        max_keys: Buckets kept at most; the fullest are forgotten first (they are idle).
    """

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Take one token for ``key``; return ``False`` when none is left."""
        if self._rate <= 0:
            return True
        with self._lock:
            now = self._clock()
            tokens, last = self._buckets.get(key, (self._burst, now))
            tokens = min(self._burst, tokens + (now - last) * self._rate)
            allowed = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
            if len(self._buckets) > self._max_keys:
                self._forget_idle(now)
            return allowed

    def _forget_idle(self, now: float) -> None:
        full = [k for k, (t, last) in self._buckets.items() if t + (now - last) * self._rate >= self._burst]
        for key in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[key]
