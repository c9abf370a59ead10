"""The store protocol shared by every backend.

Two tables carry the guarantees of SPEC §4 and §7:

- the **nonce table**, keyed by ``(tenant_id, nonce)`` under a unique constraint. A claim is
  written durably as ``started`` before the handler runs (:meth:`Store.claim_nonce`); the outcome
  and its receipt are committed together afterwards (:meth:`Store.finish`).
- the **ledger**, append-only, one signed receipt per ``seq`` (0-based, gap-free). The receipt is
  built inside the append transaction by a :data:`ReceiptFactory` that receives ``(seq, prev)``,
  so the hash chain is linear whatever the concurrency. The same transaction stores the RFC 9162
  tree nodes the append completes (:mod:`openexec_mcp.core.tlog.subtrees`: O(log n) at worst, one on
  average), so any root or proof is read from O(log n) stored hashes, never rebuilt.

Beside them, the signed **checkpoints** (SPEC §7): a table that only grows, whose latest row only
moves forward (:meth:`Store.save_checkpoint` is a compare-and-swap on the tree size).

The protocol is cut into small roles, each what one caller needs: :class:`NonceTable` (the
gate's step 4 and ``ledger resolve``), :class:`LedgerLog` (receipts), :class:`ApprovalInbox`
(pending requests and submitted artifacts) and :class:`CheckpointLog` (tree and checkpoints);
:class:`Store` is all four. The records they pass (:class:`NonceClaim`, :class:`Outcome`,
:class:`LedgerEntry`, ...) are in :mod:`openexec_mcp.store.records`, re-exported here.
Methods are synchronous and thread-safe; the async gate calls them from worker threads. Backends
raise :class:`~openexec_mcp.errors.StoreUnavailableError` when the database does not answer, with
a generic message (the detail goes to the log), and nothing else on purpose.
:func:`openexec_mcp.store.open_store` opens one from a URL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Protocol, TypeVar

from openexec_mcp.core.nonce import NonceRecord
from openexec_mcp.store.grants import GrantTable
from openexec_mcp.store.records import (
    APPROVAL_CONSUMED,
    ApprovalAlreadyConsumed,
    ApprovalRequest,
    LedgerEntry,
    NonceClaim,
    Outcome,
    ReceiptFactory,
    StoredCheckpoint,
)

_T = TypeVar("_T")

__all__ = [
    "APPROVAL_CONSUMED",
    "ApprovalAlreadyConsumed",
    "ApprovalInbox",
    "ApprovalRequest",
    "CheckpointLog",
    "LedgerEntry",
    "LedgerLog",
    "NonceClaim",
    "NonceTable",
    "Outcome",
    "ReceiptFactory",
    "Store",
    "StoredCheckpoint",
]


class NonceTable(Protocol):
    """The nonce table (SPEC §4): claims, outcomes, recovery, retention."""

    def get_nonce(self, tenant_id: str, nonce: str) -> NonceRecord | None:
        """Return the record for ``(tenant_id, nonce)``, or ``None`` when the nonce is free."""
        ...

    def claim_nonce(self, claim: NonceClaim) -> NonceRecord | ApprovalAlreadyConsumed | None:
        """Claim the nonce durably as ``started`` (and consume ``claim.approval_id``).

        A pending approval request for the same ``(tenant_id, action_hash)`` is closed in the
        same transaction.

        Returns:
            ``None`` when this call now owns the nonce; the existing record when the nonce was
            already claimed (nothing written); :data:`APPROVAL_CONSUMED` when the approval_id was
            already used (nothing written).
        """
        ...

    def finish(self, tenant_id: str, nonce: str, outcome: Outcome, make_receipt: ReceiptFactory) -> LedgerEntry:
        """Record the outcome of a claimed nonce and append its receipt, in one transaction.

        An ``indeterminate`` outcome leaves the row ``indeterminate`` (``ledger resolve`` decides it).
        """
        ...

    def claim_and_finish(
        self, claim: NonceClaim, outcome: Outcome, make_receipt: ReceiptFactory
    ) -> NonceRecord | LedgerEntry:
        """Claim a nonce and record its outcome and receipt in one transaction (``read_only`` actions only).

        Returns the existing record (nothing written) when the nonce was already claimed.
        ``claim.approval_id`` must be ``None``.
        """
        ...

    def release_claim(self, tenant_id: str, nonce: str, exec_id: str, make_receipt: ReceiptFactory) -> LedgerEntry:
        """Undo the claim of a call that sent nothing, and append its ``denied`` receipt, in one transaction.

        Deletes the ``started`` row of ``exec_id`` and the ``approval_id`` it consumed, so a retry
        with the same nonce and approval may succeed (SPEC §11 ``upstream_unavailable``).

        Raises:
            StoreUnavailableError: The database failed, or the claim is no longer ``started``.
        """
        ...

    def recover_started(self, make_receipt: Callable[[NonceRecord], ReceiptFactory]) -> list[LedgerEntry]:
        """Mark every ``started`` nonce of a dead process ``indeterminate`` and append its receipt (SPEC §4).

        The recovery time (the store's clock) is recorded as the row's ``finished_at``, so the
        record is kept a full retention period after it became ``indeterminate``. SQLite cannot
        tell a live process from a dead one: call it there at start-up only.
        """
        ...

    def get_nonce_by_exec_id(self, exec_id: str) -> NonceRecord | None:
        """Return the nonce record whose current ``exec_id`` is ``exec_id``, or ``None``."""
        ...

    def reclaim_indeterminate(
        self, tenant_id: str, nonce: str, exec_id: str, new_exec_id: str, started_at: str
    ) -> bool:
        """Claim an ``indeterminate`` nonce again for an operator's re-run (``ledger resolve --rerun``).

        One transaction moves the row from ``indeterminate`` with ``exec_id`` to ``started`` with
        ``new_exec_id`` and ``started_at``, exactly as a fresh claim: the re-run's outcome is then
        recorded with :meth:`finish`, and a crash during it is recovered as any other.

        Returns:
            ``True`` when this caller now owns the nonce; ``False`` (nothing written) when it is not
            ``indeterminate`` under ``exec_id`` any more (another operator decided first).
        """
        ...

    def fail_indeterminate(
        self, tenant_id: str, nonce: str, exec_id: str, new_exec_id: str, outcome: Outcome, make_receipt: ReceiptFactory
    ) -> LedgerEntry | None:
        """Record an operator's ``failed`` verdict on an ``indeterminate`` nonce, with its receipt.

        Returns:
            The receipt's entry; ``None`` (nothing written) when the nonce is not ``indeterminate``
            under ``exec_id`` any more.
        """
        ...

    def prune_nonces(self, finished_before: str) -> int:
        """Delete the ``finished`` nonce records older than the retention horizon.

        A record's age counts from its ``finished_at``. ``started`` and ``indeterminate`` rows are
        never deleted, whatever their age: an ``indeterminate`` call stays findable by
        ``ledger resolve`` (and its nonce taken) until an operator decides it, after which it is
        ``finished`` and ages from that decision. Nothing in the ledger is ever deleted. Deletes
        in small batches, so concurrent calls wait at most one batch.

        Consumed ``approval_id`` rows are deleted only once their ``approval_keep_until`` (the
        artifact's ``expires_at`` + skew) is before the horizon, whatever happened to their
        nonce record: such an artifact is refused as expired, so it can never execute twice
        (SPEC §4). Rows without one are kept. Inbox artifacts submitted before the horizon go too.

        Args:
            finished_before: RFC 3339 UTC (ms), the horizon: now − ``nonce.retention_seconds``.

        Returns:
            How many nonce records were deleted.
        """
        ...

    def get_action_request(self, tenant_id: str, nonce: str) -> str | None:
        """Return the JCS text of the action request recorded with the nonce, or ``None``.

        ``None`` when the nonce is unknown or was claimed without its request (older rows).
        """
        ...


class LedgerLog(Protocol):
    """The append-only ledger of signed receipts (SPEC §7)."""

    def append(self, make_receipt: ReceiptFactory, *, tenant_id: str, run_id: str, action: str) -> LedgerEntry:
        """Append a receipt that changes no nonce (denials, replays)."""
        ...

    def ledger_size(self) -> int:
        """Return the number of receipts in the ledger."""
        ...

    def get_entry(self, exec_id: str) -> LedgerEntry | None:
        """Return the ledger entry of ``exec_id``, or ``None``."""
        ...

    def get_entry_at(self, seq: int) -> LedgerEntry | None:
        """Return the ledger entry at index ``seq``, or ``None``."""
        ...

    def iter_entries(
        self, start_seq: int = 0, *, run_id: str | None = None, tenant_id: str | None = None
    ) -> Iterator[LedgerEntry]:
        """Yield ledger entries in ``seq`` order from ``start_seq``, in pages (memory stays flat).

        Args:
            start_seq: The first ``seq`` to read.
            run_id: Only this run's entries. Run ids are chosen by clients, so two tenants can
                share one: a run is ``(tenant_id, run_id)``, and each entry says its tenant.
            tenant_id: Only this tenant's entries.
        """
        ...


class ApprovalInbox(Protocol):
    """Pending approval requests and submitted artifacts (SPEC §5, "Where an artifact comes from" 3)."""

    def open_approval_request(
        self, request: ApprovalRequest, now_unix: float, max_pending: int | None = None
    ) -> ApprovalRequest:
        """Record a pending request, or return the one already pending for the same call.

        "The same call" is the same ``(tenant_id, action_hash)``; expired requests are dropped.
        With ``max_pending``, a tenant keeps at most that many pending requests: the oldest are
        closed to make room (one tenant's flood never grows the inbox nor touches another's).
        """
        ...

    def list_approval_requests(
        self,
        now_unix: float,
        tenant_id: str | None = None,
        *,
        after: tuple[str, str] | None = None,
        limit: int | None = None,
    ) -> list[ApprovalRequest]:
        """Return unexpired pending requests, oldest first (one tenant's, or all).

        Args:
            now_unix: Now, seconds since the epoch.
            tenant_id: Only this tenant's requests.
            after: Keyset cursor ``(created_at, request_id)`` of the last request already seen.
            limit: At most this many.
        """
        ...

    def get_approval_request(self, request_id: str) -> ApprovalRequest | None:
        """Return a pending request by id, or ``None``."""
        ...

    def add_approval_artifact(self, action_hash: str, approval_id: str, artifact: str, submitted_at: str) -> bool:
        """Store a submitted artifact (JCS text) against its action_hash; ``False`` if already stored.

        The artifact's own (signed) ``tenant_id`` is stored beside it, so look-ups filter on it.
        """
        ...

    def approval_artifacts(self, action_hash: str, tenant_id: str | None = None) -> list[str]:
        """Return up to 16 artifacts (JCS texts) submitted for ``action_hash``, newest first.

        With ``tenant_id``, only artifacts naming that tenant: another tenant's artifacts for the
        same action_hash can neither crowd this tenant's out nor be read by it.
        """
        ...


class CheckpointLog(Protocol):
    """The stored RFC 9162 tree and the signed checkpoints (SPEC §7)."""

    def subtree_hashes(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Return ``MTH(D[start:end])`` (32 bytes, RFC 9162 §2.1.1) for each ``(start, end)``.

        Every range of a root or proof costs O(log n) stored hashes; all ranges are read at once.

        Raises:
            ValueError: A range is empty or reaches past the ledger.
        """
        ...

    def tree_root(self, size: int) -> bytes:
        """Return the 32-byte root of the first ``size`` leaves (the empty root for 0).

        Raises:
            ValueError: ``size`` is negative or larger than the ledger.
        """
        ...

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        """Return the checkpoint of the largest size, or ``None`` before the first one."""
        ...

    def save_checkpoint(self, checkpoint: StoredCheckpoint) -> StoredCheckpoint:
        """Store ``checkpoint`` only if it is larger than the latest one; return the latest after.

        A compare-and-swap that only moves forward: when a checkpoint of the same or a larger
        size is already stored, nothing is written and that one is returned.
        """
        ...


class Store(NonceTable, LedgerLog, ApprovalInbox, CheckpointLog, GrantTable, Protocol):
    """Every role on one database. Every method is atomic; all are safe to call from several threads."""

    kind: str
    """Short backend name shown in ``/health`` (``sqlite``, ``postgresql``)."""

    def submit(self, fn: Callable[[], _T]) -> Future[_T] | None:
        """Queue the store call ``fn`` on the store's writer thread (group commit) and return its future.

        ``None`` when the store has no writer thread: the caller runs ``fn`` on a worker thread.
        """
        ...

    def ping(self) -> None:
        """Raise :class:`StoreUnavailableError` unless the database answers."""
        ...

    def close(self) -> None:
        """Release the connection(s)."""
        ...
