"""The nonce decision table of SPEC §4, as a pure function.

The store finds an existing record for ``(tenant_id, nonce)``; :func:`decide_existing` says what
the gate must answer. Keeping the table here, apart from storage and transport, makes each row
obvious to review and to test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from openexec_mcp.errors import InProgressError, NonceConflictError, NonceError, OutcomeUnknownError

__all__ = ["NonceRecord", "NonceState", "Replay", "decide_existing"]

NonceState = Literal["started", "finished", "indeterminate"]


@dataclass(frozen=True, slots=True)
class NonceRecord:
    """What the store holds for one claimed ``(tenant_id, nonce)``.

    Attributes:
        tenant_id: The tenant that claimed the nonce.
        nonce: The nonce.
        action: The tool name of the first call.
        action_hash: 64 hex, the action_hash of the first call.
        exec_id: The exec_id of the first call.
        run_id: The run of the first call.
        approval: The receipt ``approval`` object of the first call.
        started_at: RFC 3339 UTC (ms) when the claim was written.
        state: ``started`` (handler may be running), ``finished`` or ``indeterminate``.
        status: ``executed`` or ``failed`` once finished, else ``None``.
        result: The JCS text of the handler output (``None`` if failed or unfinished).
        result_hash: SHA-256 hex of JCS(result), or ``None``.
        error_code: The error code if the call failed.
        error_message: The error message if the call failed.
        extra: JCS text of the call's further receipt fields (``nonce_source``, ``upstream``),
            or ``None`` for rows written before they existed (client nonces, no upstream).
    """

    tenant_id: str
    nonce: str
    action: str
    action_hash: str
    exec_id: str
    run_id: str
    approval: str
    started_at: str
    state: NonceState
    status: str | None = None
    result: str | None = None
    result_hash: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    extra: str | None = None


@dataclass(frozen=True, slots=True)
class Replay:
    """Answer a finished nonce again without running anything (SPEC §4 row 2, §10)."""

    original: NonceRecord


def decide_existing(record: NonceRecord, action_hash: str) -> Replay | NonceError:
    """Decide the answer for a call whose nonce is already claimed (SPEC §4).

    Args:
        record: The stored record for the call's ``(tenant_id, nonce)``.
        action_hash: The action_hash of the new call (64 hex).

    Returns:
        :class:`Replay` when the same call already finished; otherwise the error to deny with:
        :class:`NonceConflictError` (different action_hash), :class:`InProgressError` (first call
        still running) or :class:`OutcomeUnknownError` (first call died mid-run).
    """
    if record.action_hash != action_hash:
        return NonceConflictError("nonce was already used for a different action or payload")
    if record.state == "started":
        return InProgressError("the first call with this nonce is still running; retry later")
    if record.state == "indeterminate":
        return OutcomeUnknownError(
            "the first call with this nonce stopped mid-run; its outcome is unknown and it is not re-run"
        )
    return Replay(record)
