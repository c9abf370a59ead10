"""The ledger service: signed checkpoints, inclusion and consistency proofs over a store (SPEC §7, §8).

:class:`Ledger` joins a :class:`~openexec_mcp.store.base.Store` (receipts, tree nodes, stored
checkpoints) and the pure core (:mod:`~openexec_mcp.core.tlog.merkle`,
:mod:`~openexec_mcp.core.tlog.checkpoint`, :mod:`~openexec_mcp.core.tlog.proof`).

Checkpoints are C2SP ``tlog-checkpoint`` notes, origin and key name ``server_id``, signed with
the server key. The server never signs two inconsistent checkpoints: the latest is stored, a new
one is signed only for a larger size, only after the stored latest is proven a prefix of it
(RFC 9162 consistency), and it is saved by a compare-and-swap that only moves forward.

When: on demand (:meth:`Ledger.checkpoint`, which covers every receipt committed before the
call) and after append batches (:meth:`Ledger.note_appended`: once ``checkpoint_every`` appends
have gathered, or at the first append ``checkpoint_interval_seconds`` after the last one). Batch
checkpoints are signed on one background thread, so no call waits for them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

from openexec_mcp.core.receipt import ServerKey
from openexec_mcp.core.tlog.checkpoint import sign_checkpoint
from openexec_mcp.core.tlog.merkle import (
    EMPTY_ROOT,
    SubtreeHasher,
    consistency_proof,
    inclusion_proof,
    verify_consistency,
)
from openexec_mcp.core.tlog.proof import format_inclusion_proof
from openexec_mcp.errors import VerificationError
from openexec_mcp.faults import unsafe_fault_point
from openexec_mcp.store.base import LedgerEntry, Store, StoredCheckpoint

__all__ = ["DEFAULT_CHECKPOINT_EVERY", "DEFAULT_CHECKPOINT_INTERVAL_SECONDS", "ConsistencyAnswer", "Ledger"]

logger = logging.getLogger("openexec_mcp.ledger.checkpoints")

DEFAULT_CHECKPOINT_EVERY: Final = 256
"""Appends after which a batch checkpoint is signed."""

DEFAULT_CHECKPOINT_INTERVAL_SECONDS: Final = 5.0
"""Seconds after which the next append triggers a batch checkpoint, however few appends came."""


@dataclass(frozen=True, slots=True)
class ConsistencyAnswer:
    """A consistency proof between two tree sizes (RFC 9162 §2.1.4).

    Attributes:
        old_size: The earlier size.
        new_size: The later size.
        proof: The proof hashes (32 bytes each).
        checkpoint: The signed checkpoint of ``new_size`` when the server chose that size.
    """

    old_size: int
    new_size: int
    proof: list[bytes]
    checkpoint: StoredCheckpoint | None = None


class Ledger:
    """Checkpoints and proofs for one store, signed by one server key.

    Args:
        store: The store holding the ledger.
        server_key: Signs checkpoints.
        server_id: The checkpoint origin and key name; the receipts' ``log_id``.
        checkpoint_every: Appends per batch checkpoint (see the module docstring).
        checkpoint_interval_seconds: Longest time between batch checkpoints while appends come.
        monotonic: The clock for the interval, in seconds.
    """

    def __init__(
        self,
        store: Store,
        server_key: ServerKey,
        server_id: str,
        *,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        checkpoint_interval_seconds: float = DEFAULT_CHECKPOINT_INTERVAL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.server_key = server_key
        self.server_id = server_id
        self._every = checkpoint_every
        self._interval = checkpoint_interval_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._sign_lock = threading.Lock()
        self._appended = 0
        self._last_batch = monotonic()
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None
        self._closed = False

    # -- checkpoints ----------------------------------------------------------------------------

    def checkpoint(self) -> StoredCheckpoint:
        """Return a checkpoint covering every receipt committed before the call (SPEC §10).

        The stored latest one when it is large enough, else a new one of the current size.

        Raises:
            StoreUnavailableError: The store does not answer.
            VerificationError: ``inconsistent_checkpoint``: the stored tree contradicts the latest
                checkpoint (the store was tampered with); nothing is signed.
        """
        size = self.store.ledger_size()
        latest = self.store.latest_checkpoint()
        if latest is not None and latest.size >= size:
            return latest
        return self.sign_checkpoint(size)

    def sign_checkpoint(self, size: int) -> StoredCheckpoint:
        """Sign and store the checkpoint of ``size``, unless one at least as large is stored.

        Steps: (1) read the stored latest and refuse to go back; (2) read the root of ``size``
        from the store; (3) prove the latest a prefix of the new tree; (4) sign; (5) save by
        compare-and-swap and return what the store holds as latest afterwards.

        Args:
            size: The tree size, ``0 <= size <= ledger size``.

        Raises:
            ValueError: ``size`` is smaller than the stored latest checkpoint, or beyond the ledger.
            VerificationError: ``inconsistent_checkpoint`` (see :meth:`checkpoint`).
        """
        with self._sign_lock:
            # (1) Only forward.
            latest = self.store.latest_checkpoint()
            if latest is not None and size < latest.size:
                raise ValueError(f"refusing to sign size {size}: a checkpoint of size {latest.size} exists")
            if latest is not None and size == latest.size:
                return latest
            # (2) The root, from O(log n) stored nodes.
            root = self.store.tree_root(size)
            # (3) Never sign a tree that does not extend what was signed before.
            if latest is not None and latest.size > 0:
                proof = self._prove(lambda subtree_hash: consistency_proof(latest.size, size, subtree_hash))
                try:
                    verify_consistency(latest.size, size, proof, bytes.fromhex(latest.root), root)
                except VerificationError as exc:
                    logger.critical("the stored tree contradicts checkpoint %d: %s", latest.size, exc.message)
                    raise VerificationError(
                        "inconsistent_checkpoint", f"the stored tree contradicts checkpoint {latest.size}"
                    ) from None
            # (4) Sign; (5) save, only forward.
            note = sign_checkpoint(self.server_id, size, root, self.server_key.private_key)
            unsafe_fault_point("in_checkpoint")
            return self.store.save_checkpoint(StoredCheckpoint(size, root.hex(), note))

    def note_appended(self, entry: LedgerEntry) -> None:
        """Count one append; start a background checkpoint when a batch is due. Cheap; never raises."""
        now = self._monotonic()
        with self._lock:
            self._appended += 1
            if self._appended < self._every and now - self._last_batch < self._interval:
                return
            if self._closed or (self._pending is not None and not self._pending.done()):
                return  # shutting down, or the running one will be followed by the next batch
            self._appended = 0
            self._last_batch = now
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="openexec-checkpoint")
            self._pending = self._executor.submit(self._batch_checkpoint)

    def flush(self) -> None:
        """Wait for the background checkpoint in progress, if any."""
        with self._lock:
            pending = self._pending
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Finish the background checkpoint in progress and stop its thread; start no other."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    def _batch_checkpoint(self) -> None:
        try:
            self.checkpoint()
        except Exception:
            logger.exception("batch checkpoint failed; the next batch or GET /ledger/checkpoint will retry")

    # -- proofs ---------------------------------------------------------------------------------

    def inclusion_proof(self, seq: int, size: int) -> list[bytes]:
        """Return the RFC 9162 audit path of leaf ``seq`` in the tree of ``size`` leaves.

        Raises:
            ValueError: ``seq`` is not inside the tree, or ``size`` is beyond the ledger.
        """
        return self._prove(lambda subtree_hash: inclusion_proof(seq, size, subtree_hash))

    def proof_text(self, entry: LedgerEntry) -> str:
        """Return the C2SP ``tlog-proof`` of a ledger entry against a checkpoint that covers it.

        Raises:
            StoreUnavailableError: The store does not answer.
        """
        checkpoint = self.checkpoint()
        if checkpoint.size <= entry.seq:  # committed before the call, so only a racing replica
            checkpoint = self.sign_checkpoint(self.store.ledger_size())
        hashes = self.inclusion_proof(entry.seq, checkpoint.size)
        return format_inclusion_proof(entry.seq, hashes, checkpoint.note)

    def consistency(self, old_size: int, new_size: int | None = None) -> ConsistencyAnswer:
        """Return the consistency proof from ``old_size`` to ``new_size``.

        Args:
            old_size: The size of the checkpoint the auditor holds (0: the empty tree, empty proof).
            new_size: The later size; ``None`` for the size of :meth:`checkpoint`, which is then
                returned with the proof.

        Raises:
            ValueError: Not ``0 <= old_size <= new_size <= ledger size``.
        """
        checkpoint = None
        if new_size is None:
            checkpoint = self.checkpoint()
            new_size = checkpoint.size
        if not 0 <= old_size <= new_size:
            raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
        if old_size in (0, new_size):
            # Every tree extends the empty one and itself: the proof is empty, the size must exist.
            if new_size > self.store.ledger_size():
                raise ValueError(f"no tree of size {new_size}: the ledger is smaller")
            return ConsistencyAnswer(old_size, new_size, [], checkpoint)
        proof = self._prove(lambda hasher: consistency_proof(old_size, new_size, hasher))
        return ConsistencyAnswer(old_size, new_size, proof, checkpoint)

    def _prove(self, build: Callable[[SubtreeHasher], list[bytes]]) -> list[bytes]:
        """Run a proof builder with every subtree hash it needs read in one store round trip.

        The builders of :mod:`~openexec_mcp.core.tlog.merkle` choose their subtrees from the sizes
        alone, never from hash values, so a first dry run names the ranges.
        """
        ranges: list[tuple[int, int]] = []

        def record(start: int, end: int) -> bytes:
            ranges.append((start, end))
            return EMPTY_ROOT

        build(record)
        found = dict(zip(ranges, self.store.subtree_hashes(ranges), strict=True)) if ranges else {}
        return build(lambda start, end: found[(start, end)])
