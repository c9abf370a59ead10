"""Step 0 of the gate: may this call start at all? Draining, per-tenant rate limit, in-flight count.

A refusal here records nothing (``shutting_down``, ``rate_limited``), so a flood of calls cannot
flood the ledger. The per-action worker bound is the handler runner's
(:meth:`~openexec_mcp.gate.execution.HandlerRunner.reserve`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import anyio

from openexec_mcp.errors import RateLimitedError, ShuttingDownError

__all__ = ["Admission", "TokenBucket"]

logger = logging.getLogger(__name__)


class TokenBucket:
    """A token bucket per key (tenant, token or client address): ``rate`` per second, ``burst`` at once.

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


class Admission:
    """Decides whether a call may start (step 0) and counts the calls under way.

    Args:
        rate_limit_per_second: Calls per second per tenant (0: no limit).
        rate_limit_burst: Calls a tenant may make at once.
    """

    def __init__(self, rate_limit_per_second: float, rate_limit_burst: int) -> None:
        self._bucket = TokenBucket(rate_limit_per_second, rate_limit_burst)
        self._in_flight = 0
        self.draining = False
        """Set on shutdown: new calls are refused with ``shutting_down``; running ones finish."""

    @property
    def in_flight(self) -> int:
        """How many calls are past admission and not yet answered."""
        return self._in_flight

    def admit(self, tenant_id: str) -> None:
        """Let one call of ``tenant_id`` start.

        Raises:
            ShuttingDownError: The server is draining.
            RateLimitedError: The tenant has no token left.
        """
        if self.draining:
            raise ShuttingDownError("the server is shutting down; retry later")
        if not self._bucket.allow(tenant_id):
            raise RateLimitedError("too many calls for this tenant; retry later")

    def enter(self) -> None:
        """Count one admitted call as under way (on the event loop)."""
        self._in_flight += 1

    def leave(self) -> None:
        """Count one call as answered."""
        self._in_flight -= 1

    async def drain(self, grace_seconds: float) -> int:
        """Refuse new calls and wait up to ``grace_seconds`` for running ones; return how many remain."""
        self.draining = True
        with anyio.move_on_after(grace_seconds):
            while self._in_flight:
                await anyio.sleep(0.05)
        if self._in_flight:
            logger.warning(
                "%d call(s) still running after %s s; their outcome is recorded at restart",
                self._in_flight,
                grace_seconds,
            )
        return self._in_flight
