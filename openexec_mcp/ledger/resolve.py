"""The operator's decision on an ``indeterminate`` call: ``ledger resolve EXEC_ID`` (SPEC §4).

A call whose process died mid-run is recorded ``indeterminate`` at the next start, and its nonce
answers ``outcome_unknown``: nothing re-runs by itself, whatever the action. Only an operator, who
can look at the world outside (did the e-mail leave?), may close the question, and that decision
gets its own receipt, whose ``original_exec_id`` names the cut-off call:

- ``mark_failed``: a ``failed`` receipt with ``error_code`` ``operator_marked_failed``; retries of
  the nonce then replay that failure.
- ``rerun``: only for actions declared ``idempotent=True``. The recorded action request (JCS text
  kept with the nonce, checked against the call's ``action_hash``) goes through the handler once
  more, under a fresh durable claim, so a crash during the re-run is recovered like any other
  call; the outcome is recorded with its receipt and retries replay it.

Steps of :func:`resolve_indeterminate`, the first that refuses decides:

  1. find the nonce record whose current ``exec_id`` is the given one;
  2. it must be ``indeterminate``;
  3. for ``rerun``: the action must be registered and idempotent, and its recorded request must
     hash to the call's ``action_hash`` and pass the input model;
  4. record the decision in one transaction that moves the record out of ``indeterminate`` only if
     it is still there under this ``exec_id``, so two operators never both decide.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Literal

import anyio.to_thread

from openexec_mcp.core.canonical import canonicalize, json_object, parse_json, sha256_hex
from openexec_mcp.core.nonce import NonceRecord
from openexec_mcp.errors import (
    InvalidRequestError,
    MalformedInputError,
    OperatorMarkedFailedError,
    ResolutionRefusedError,
)
from openexec_mcp.gate.pipeline import Gate
from openexec_mcp.registry import Action
from openexec_mcp.store.base import LedgerEntry, Outcome

__all__ = ["Decision", "Resolution", "resolve_indeterminate"]

Decision = Literal["rerun", "mark_failed"]

MARKED_FAILED_MESSAGE = "an operator recorded this call as failed after its process died mid-run"


@dataclass(frozen=True, slots=True)
class Resolution:
    """A recorded decision.

    Attributes:
        decision: ``rerun`` or ``mark_failed``.
        original_exec_id: The ``indeterminate`` call decided on.
        entry: The decision's receipt in the ledger (its ``exec_id`` is new).
        status: ``executed`` or ``failed`` (the re-run's outcome, or the verdict).
        error_code: The error code when ``failed``.
    """

    decision: Decision
    original_exec_id: str
    entry: LedgerEntry
    status: str
    error_code: str | None


async def resolve_indeterminate(gate: Gate, exec_id: str, decision: Decision) -> Resolution:
    """Record an operator's decision on the ``indeterminate`` call ``exec_id`` (steps in the module docstring).

    Args:
        gate: A gate on the server's store, key and actions, built without start-up recovery.
        exec_id: The ``exec_id`` of the cut-off call (32 hex, from its ``indeterminate`` receipt).
        decision: ``rerun`` or ``mark_failed``.

    Returns:
        The decision and its receipt.

    Raises:
        ResolutionRefusedError: Unknown call, not ``indeterminate`` (already decided, or never cut
            off), or a ``rerun`` of an action that is unknown, not idempotent, or has no usable
            recorded request. Nothing is recorded.
        StoreUnavailableError: The store did not answer.
    """
    store = gate.store
    # (1) and (2): an open question about this exact call.
    record = await anyio.to_thread.run_sync(store.get_nonce_by_exec_id, exec_id)
    if record is None:
        if await anyio.to_thread.run_sync(store.get_entry, exec_id) is not None:
            raise ResolutionRefusedError(f"call {exec_id} is not indeterminate (already decided, or its record pruned)")
        raise ResolutionRefusedError(f"no call with exec_id {exec_id[:64]!r}")
    if record.state != "indeterminate":
        raise ResolutionRefusedError(f"call {exec_id} is {record.state}, not indeterminate; nothing to resolve")
    new_exec_id = secrets.token_hex(16)
    started_at = gate.receipts.now()
    if decision == "mark_failed":
        verdict = OperatorMarkedFailedError(MARKED_FAILED_MESSAGE)
        outcome = Outcome("failed", None, None, verdict.code, verdict.message, started_at)
        factory = gate.receipts.for_resolution(record, exec_id=new_exec_id, started_at=started_at, outcome=outcome)
        # (4): recorded only if still indeterminate under this exec_id.
        entry = await anyio.to_thread.run_sync(
            store.fail_indeterminate, record.tenant_id, record.nonce, exec_id, new_exec_id, outcome, factory
        )
        if entry is None:
            raise ResolutionRefusedError(f"call {exec_id} was resolved by someone else meanwhile")
        return Resolution(decision, exec_id, entry, "failed", verdict.code)
    # (3): only an idempotent action, with exactly the request that was approved.
    action, model = await _rerunnable(gate, record)
    # (4): a fresh durable claim first, as for any call; then the handler, then outcome and receipt.
    claimed = await anyio.to_thread.run_sync(
        store.reclaim_indeterminate, record.tenant_id, record.nonce, exec_id, new_exec_id, started_at
    )
    if not claimed:
        raise ResolutionRefusedError(f"call {exec_id} was resolved by someone else meanwhile")
    # Shielded, as in the gate: once claimed, the outcome and its receipt are always recorded.
    with anyio.CancelScope(shield=True):
        return await _rerun(gate, record, action, model, new_exec_id, started_at)
    raise AssertionError("unreachable: a shielded scope does not swallow the return")  # pragma: no cover


async def _rerun(
    gate: Gate, record: NonceRecord, action: Action, model: Any, new_exec_id: str, started_at: str
) -> Resolution:
    outcome = (await gate.run_handler(action, model)).outcome
    factory = gate.receipts.for_resolution(record, exec_id=new_exec_id, started_at=started_at, outcome=outcome)
    entry = await anyio.to_thread.run_sync(gate.store.finish, record.tenant_id, record.nonce, outcome, factory)
    return Resolution("rerun", record.exec_id, entry, outcome.status, outcome.error_code)


async def _rerunnable(gate: Gate, record: NonceRecord) -> tuple[Action, Any]:
    action = gate.registry.get(record.action)
    if action is None:
        raise ResolutionRefusedError(f"action {record.action!r} is not loaded; cannot re-run it")
    if not action.idempotent:
        raise ResolutionRefusedError(
            f"action {record.action!r} is not declared idempotent=True; only --mark-failed may resolve it"
        )
    text = await anyio.to_thread.run_sync(gate.store.get_action_request, record.tenant_id, record.nonce)
    if text is None or sha256_hex(text.encode("utf-8")) != record.action_hash:
        raise ResolutionRefusedError("the call's action request was not recorded intact; cannot re-run it")
    try:
        request = json_object(parse_json(text))
        payload = json_object(request.get("payload")) if request is not None else None
        if payload is None:
            raise MalformedInputError("the recorded action request has no payload object")
        # As the gate validates (strict, from the canonical bytes): the same payload, the same model.
        model = action.parse_payload(payload, canonicalize(payload))
    except InvalidRequestError:
        raise ResolutionRefusedError(
            f"the recorded payload no longer passes the input model of {record.action!r}; cannot re-run it"
        ) from None
    return action, model
