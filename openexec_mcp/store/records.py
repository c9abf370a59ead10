"""The records the store protocol passes around: claims, outcomes, ledger rows, inbox requests, checkpoints.

These are plain frozen values shared by the role protocols of :mod:`openexec_mcp.store.base`
(which re-exports every name here, so ``from openexec_mcp.store.base import NonceClaim`` keeps
working) and by the SQL of both backends. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from openexec_mcp.core.receipt import SignedReceipt

__all__ = [
    "APPROVAL_CONSUMED",
    "ApprovalAlreadyConsumed",
    "ApprovalRequest",
    "LedgerEntry",
    "NonceClaim",
    "Outcome",
    "ReceiptFactory",
    "StoredCheckpoint",
]

ReceiptFactory = Callable[[int, str | None], SignedReceipt]
"""Builds and signs the receipt for ledger index ``seq`` whose predecessor hash is ``prev``."""


@dataclass(frozen=True, slots=True)
class NonceClaim:
    """A request to claim ``(tenant_id, nonce)`` for one call (SPEC §4).

    ``approval_id``, when set, is consumed in the same transaction (an approval executes once).
    ``request``, when set, is the JCS text of the action request (SPEC §3) whose SHA-256 is
    ``action_hash``; it is kept with the nonce so that ``ledger replay`` can re-run the call.
    ``approval_keep_until`` (RFC 3339 UTC) is the artifact's ``expires_at`` + clock skew: the
    consumed ``approval_id`` is kept at least until then, whatever happens to the nonce record
    (SPEC §4); ``None`` keeps it for good.
    ``extra`` is the JCS text of the call's further receipt fields (``nonce_source``,
    ``upstream``), kept so that receipts written later for this call (recovery, resolve) carry them.
    """

    tenant_id: str
    nonce: str
    action: str
    action_hash: str
    exec_id: str
    run_id: str
    approval: str
    started_at: str
    approval_id: str | None = None
    request: str | None = None
    approval_keep_until: str | None = None
    extra: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """The handler's outcome, committed with its receipt.

    Attributes:
        status: ``executed``, ``failed``, or ``indeterminate`` (sent, no answer: the nonce stays
            taken as ``indeterminate``, SPEC §11).
        result: JCS text of the result, or ``None``.
        result_hash: SHA-256 hex of the JCS bytes of the result, or ``None``.
        error_code: Stable error code when ``failed``.
        error_message: Message when ``failed``.
        finished_at: RFC 3339 UTC (ms).
    """

    status: str
    result: str | None
    result_hash: str | None
    error_code: str | None
    error_message: str | None
    finished_at: str


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One ledger row: the receipt at ``seq`` and the columns indexed for look-ups."""

    seq: int
    exec_id: str
    receipt_hash: str
    envelope: str
    tenant_id: str
    run_id: str
    action: str
    status: str


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """A pending approval request in the inbox (SPEC §5, "Where an artifact comes from" 3).

    Attributes:
        request_id: Random id, 32 hex.
        tenant_id: The tenant of the call that needs approval.
        action_hash: 64 hex, what an approver signs.
        action_request: JCS text of ``{"action", "payload", "nonce"}``, shown to the approver.
        created_at: RFC 3339 UTC (ms).
        expires_at: RFC 3339 UTC (ms); after it the request is no longer listed.
        expires_unix: ``expires_at`` in seconds since the epoch (for comparisons in SQL).
    """

    request_id: str
    tenant_id: str
    action_hash: str
    action_request: str
    created_at: str
    expires_at: str
    expires_unix: float


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A signed checkpoint as the store keeps it (SPEC §7).

    Attributes:
        size: The tree size it covers.
        root: The RFC 9162 root of the first ``size`` leaves, 64 lowercase hex.
        note: The C2SP signed note (``tlog-checkpoint`` text and signature line), verbatim.
    """

    size: int
    root: str
    note: str


class ApprovalAlreadyConsumed:
    """Sentinel answer of :meth:`Store.claim_nonce` when the approval_id was already used."""


APPROVAL_CONSUMED = ApprovalAlreadyConsumed()
