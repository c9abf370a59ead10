"""Nonce retention (SPEC §4): old nonce records are pruned; the ledger keeps every receipt.

A nonce record is kept at least ``nonce.retention_seconds`` after its call finished; a ``started``
or ``indeterminate`` record is never pruned (``ledger resolve`` must find it). Pruning never lets
a replay through: the record outlives every approval that could have authorised its call, and
approvals issued before the retention horizon are refused
(:class:`~openexec_mcp.gate.approvals.Approver` passes ``min_issued_at``).
Independently of the nonce record, a consumed ``approval_id`` is kept until its artifact's
``expires_at`` + skew has passed the horizon (:meth:`~openexec_mcp.store.base.NonceTable.prune_nonces`),
so even an artifact issued within the skew in the future never executes twice.
With ``auto`` approval a pruned nonce is simply free again, which is what the retention period
promises and no more.

Pruning happens in three places: ``openexec-mcp ledger prune-nonces`` (by hand or from cron), once
at server start, and then piggy-backed on calls: the first call after each
:data:`SWEEP_INTERVAL_SECONDS` starts a sweep on a background thread and does not wait for it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

from openexec_mcp.core.clock import format_timestamp
from openexec_mcp.store.base import Store

__all__ = ["SWEEP_INTERVAL_SECONDS", "NonceSweeper", "prune_nonces", "retention_horizon"]

logger = logging.getLogger("openexec_mcp.ledger.retention")

SWEEP_INTERVAL_SECONDS: Final = 3600
"""How often a running server prunes, in seconds (one hour)."""


def retention_horizon(now: datetime, retention_seconds: int) -> str:
    """Return the retention horizon ``now − retention_seconds`` as RFC 3339 UTC (ms).

    Args:
        now: Aware UTC datetime, read once by the caller.
        retention_seconds: ``nonce.retention_seconds`` (at least 60).

    Raises:
        ValueError: ``now`` is naive.
    """
    return format_timestamp(now - timedelta(seconds=retention_seconds))


def prune_nonces(store: Store, *, retention_seconds: int, now: datetime) -> int:
    """Delete the nonce records older than the retention horizon; return how many went.

    Args:
        store: The nonce table.
        retention_seconds: ``nonce.retention_seconds``.
        now: Aware UTC datetime.

    Raises:
        StoreUnavailableError: The store did not answer.
    """
    deleted = store.prune_nonces(retention_horizon(now, retention_seconds))
    if deleted:
        logger.info("pruned %d nonce record(s) older than %d s", deleted, retention_seconds)
    return deleted


class NonceSweeper:
    """Prunes at most once per ``interval_seconds``, on a background thread, never failing a call.

    Args:
        store: The nonce table.
        retention_seconds: ``nonce.retention_seconds``.
        clock: Returns the current aware UTC datetime (the gate's clock).
        interval_seconds: Time between sweeps, in seconds.
        recover: Also run on each sweep: records the calls of replicas that died (PostgreSQL,
            where a per-replica lock tells a dead replica's ``started`` calls from live ones) as
            ``indeterminate``, so their nonces stop answering ``in_progress`` without waiting for
            a replica to restart. Returns how many calls it recorded.
    """

    def __init__(
        self,
        store: Store,
        retention_seconds: int,
        clock: Callable[[], datetime],
        interval_seconds: float = SWEEP_INTERVAL_SECONDS,
        recover: Callable[[], int] | None = None,
    ) -> None:
        self._store = store
        self._recover = recover
        self._retention_seconds = retention_seconds
        self._clock = clock
        self._interval = timedelta(seconds=interval_seconds)
        self._lock = threading.Lock()
        self._next_at: datetime | None = None
        self._thread: threading.Thread | None = None

    def sweep(self) -> int:
        """Prune now, on this thread; return how many records went (0 when the store is down)."""
        now = self._clock()
        with self._lock:
            self._next_at = now + self._interval
        try:
            if self._recover is not None and (recovered := self._recover()):
                logger.warning("recorded %d call(s) of a dead replica as indeterminate", recovered)
            return prune_nonces(self._store, retention_seconds=self._retention_seconds, now=now)
        except Exception as exc:  # a sweep is housekeeping: it must never fail a call or a start
            logger.warning("nonce retention sweep failed, retrying in %s: %s", self._interval, exc)
            return 0

    def maybe_sweep(self) -> threading.Thread | None:
        """Start a sweep on a daemon thread if one is due and none is running; return that thread.

        Cheap when nothing is due (one clock read and a comparison): meant to be called on every call.
        """
        now = self._clock()
        with self._lock:
            if (self._next_at is not None and now < self._next_at) or (
                self._thread is not None and self._thread.is_alive()
            ):
                return None
            self._next_at = now + self._interval
            self._thread = threading.Thread(target=self.sweep, name="openexec-nonce-sweep", daemon=True)
            self._thread.start()
            return self._thread

    def join(self, timeout_seconds: float | None = None) -> None:
        """Wait for a running sweep (shutdown, tests)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout_seconds)
