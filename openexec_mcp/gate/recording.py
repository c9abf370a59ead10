"""The gate's records: build a receipt, write it, answer with its envelope (SPEC §6, §7, §10).

Every answer after step 2 of :meth:`~openexec_mcp.gate.pipeline.Gate.call` comes from a
:class:`Recorder`, with its receipt appended to the ledger: :meth:`Recorder.record` commits a
handler's execution (step 6), :meth:`Recorder.deny` a refusal, :meth:`Recorder.answer_existing`
a nonce already used (step 4), and :meth:`Recorder.fail_closed` an unexpected exception. Store
calls run on the store's writer thread (:meth:`Recorder.write`, group commit); reads run inline
when the store says its reads are local and short (:meth:`Recorder.read`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from openexec_mcp.core.nonce import NonceRecord, Replay, decide_existing
from openexec_mcp.errors import InternalError, OpenExecError, OutcomeNotRecordedError, StoreUnavailableError
from openexec_mcp.faults import unsafe_fault_point
from openexec_mcp.gate.answers import Answer
from openexec_mcp.gate.approvals import AUTO_APPROVAL
from openexec_mcp.gate.envelope import refusal_envelope, result_envelope
from openexec_mcp.gate.execution import Execution
from openexec_mcp.gate.receipts import CallFacts, ReceiptStatus, ReceiptWriter
from openexec_mcp.store.base import LedgerEntry, Outcome, ReceiptFactory, Store
from openexec_mcp.store.writer import wait as writer_wait

__all__ = ["Commit", "NotRecorded", "Progress", "Recorder", "Release", "not_recorded"]

logger = logging.getLogger(__name__)

_R = TypeVar("_R")

Commit = Callable[[Outcome, ReceiptFactory], Awaitable[LedgerEntry | NonceRecord]]
"""Writes a sent call's outcome with its receipt in one transaction: ``Store.finish`` after a
durable claim, ``Store.claim_and_finish`` on the read-only path (which answers the
:class:`~openexec_mcp.core.nonce.NonceRecord` of a concurrent duplicate instead)."""

Release = Callable[[ReceiptFactory], Awaitable[LedgerEntry]]
"""Records a call whose handler sent nothing as ``denied``: ``Store.release_claim`` after a
durable claim (the nonce is free again), a plain append on the read-only path (nothing claimed)."""


@dataclass(slots=True)
class Progress:
    """How far one call got: decides what an unexpected exception records (SPEC §10)."""

    facts: CallFacts | None = None
    approval: Mapping[str, Any] = field(default_factory=lambda: AUTO_APPROVAL)
    claimed: bool = False
    handler_started: bool = False
    recorded: bool = False


class NotRecorded(Exception):
    """The handler ran and the store did not take its outcome (answered ``outcome_not_recorded``)."""


class Recorder:
    """Writes one gate's receipts and turns each into the call's answer.

    Args:
        store: The nonce table and ledger.
        receipts: Builds the receipt bodies, signed inside the append transaction.
        on_append: Called on the event loop with every ledger entry appended (e.g. to sign
            checkpoints after append batches); must be cheap, and an exception in it is only logged.
    """

    def __init__(
        self, store: Store, receipts: ReceiptWriter, on_append: Callable[[LedgerEntry], None] | None = None
    ) -> None:
        self.store = store
        self.receipts = receipts
        self.on_append = on_append

    # -- store calls ----------------------------------------------------------------------------

    async def read(self, fn: Callable[..., _R], *args: Any) -> _R:
        """Run the store read ``fn(*args)``: inline when the store says its reads are local and short (SQLite WAL)."""
        if getattr(self.store, "inline_reads", False):
            return fn(*args)
        return await anyio.to_thread.run_sync(partial(fn, *args))

    async def write(self, fn: Callable[..., _R], *args: Any) -> _R:
        """Run the store call ``fn(*args)`` on the store's writer thread (group commit), awaited with no thread hop.

        A store without a writer thread runs it on a worker thread instead.
        """
        call: Callable[[], _R] = partial(fn, *args) if args else fn
        future = self.store.submit(call)
        if future is None:
            return await anyio.to_thread.run_sync(call)
        return await writer_wait(future)

    async def write_outcome(self, method: Callable[..., LedgerEntry], facts: CallFacts, *args: Any) -> LedgerEntry:
        """Run ``method(tenant_id, nonce, *args)``, the store call that records the outcome of a claimed call.

        Raises:
            NotRecorded: The store is unavailable (the claim stays ``started``).
        """
        try:
            return await self.write(method, facts.tenant_id, facts.nonce, *args)
        except StoreUnavailableError as exc:
            # The handler ran but its outcome is not recorded: never say "denied" here. The claim
            # stays 'started', so the nonce answers in_progress, then outcome_unknown after restart.
            logger.error("outcome of %s not recorded: %s", facts.exec_id, exc.message)
            raise NotRecorded from None

    async def append(self, facts: CallFacts, factory: ReceiptFactory) -> LedgerEntry:
        """Append one receipt that claims nothing (a refusal, a replay) on the writer thread."""
        return await self.write(self._append, facts, factory)

    def _append(self, facts: CallFacts, factory: ReceiptFactory) -> LedgerEntry:
        return self.store.append(factory, tenant_id=facts.tenant_id, run_id=facts.run_id, action=facts.action)

    # -- receipts and answers -------------------------------------------------------------------

    def factory(
        self, facts: CallFacts, status: ReceiptStatus, error_code: str | None, approval: Mapping[str, Any]
    ) -> ReceiptFactory:
        """Return the factory of a receipt with no result (``denied``, ``failed``), finished now."""
        return self.receipts.factory(
            facts,
            status=status,
            error_code=error_code,
            approval=approval,
            result_hash=None,
            original_exec_id=None,
            finished_at=self.receipts.now(),
        )

    def answer(
        self, entry: LedgerEntry, facts: CallFacts, status: str, result: Any, error: OpenExecError | None
    ) -> Answer:
        """Return the answer of a committed receipt (after telling ``on_append``)."""
        self._appended(entry)
        error_json = error.to_dict() if error is not None else None
        return Answer(result_envelope(entry, facts.action, status, result, error_json), error)

    async def record(
        self,
        execution: Execution,
        facts: CallFacts,
        approval: Mapping[str, Any],
        progress: Progress,
        *,
        commit: Commit,
        release: Release,
    ) -> Answer:
        """Step 6: record one execution with its receipt, through the store writes of the call's path.

        Args:
            execution: What step 5 returned.
            facts: The call.
            approval: The receipt's ``approval`` object.
            progress: Marked ``recorded`` once the receipt is committed.
            commit: Writes the outcome of a sent call (``executed``, ``failed``, ``indeterminate``).
            release: Records a call that sent nothing as ``denied`` (``upstream_unavailable``).
        """
        if execution.kind == "not_sent":
            assert execution.error is not None
            entry = await release(self.factory(facts, "denied", execution.error.code, approval))
            progress.recorded = True
            return self.answer(entry, facts, "denied", None, execution.error)
        outcome = execution.outcome
        status: ReceiptStatus = "indeterminate" if execution.kind == "indeterminate" else outcome.status  # type: ignore[assignment]
        factory = self.receipts.factory(
            facts,
            status=status,
            error_code=outcome.error_code,
            approval=approval,
            result_hash=outcome.result_hash,
            original_exec_id=None,
            finished_at=outcome.finished_at,
        )
        written = await commit(outcome, factory)
        if isinstance(written, NonceRecord):  # a concurrent duplicate claimed it first: this run is dropped
            return await self.answer_existing(written, facts)
        progress.recorded = True
        unsafe_fault_point("after_finish")
        return self.answer(written, facts, status, execution.result, execution.error)

    async def answer_existing(self, record: NonceRecord, facts: CallFacts) -> Answer:
        """Answer a nonce already claimed (SPEC §4): ``replayed``, else denied as the record decides."""
        decision = decide_existing(record, facts.action_hash)
        if not isinstance(decision, Replay):
            return await self.deny(decision, facts, AUTO_APPROVAL)
        original = decision.original
        # A replay of a failed call reports the original failure; it never re-runs the handler.
        original_error = (
            {"code": original.error_code, "message": original.error_message} if original.status == "failed" else None
        )
        factory = self.receipts.factory(
            facts,
            status="replayed",
            error_code=original.error_code,
            approval=json.loads(original.approval),
            result_hash=original.result_hash,
            original_exec_id=original.exec_id,
            finished_at=self.receipts.now(),
        )
        entry = await self.append(facts, factory)
        self._appended(entry)
        result = json.loads(original.result) if original.result is not None else None
        return Answer(result_envelope(entry, facts.action, "replayed", result, original_error), None)

    async def deny(
        self,
        error: OpenExecError,
        facts: CallFacts,
        approval: Mapping[str, Any],
        approval_request: Mapping[str, Any] | None = None,
    ) -> Answer:
        """Record and answer a refusal (``denied``), with the pending inbox request when one was opened."""
        logger.info("denied %s: %s", facts.action, error.code)
        entry = await self.append(facts, self.factory(facts, "denied", error.code, approval))
        self._appended(entry)
        envelope = result_envelope(entry, facts.action, "denied", None, error.to_dict())
        envelope["approval_request"] = dict(approval_request) if approval_request else None
        return Answer(envelope, error)

    async def fail_closed(self, action: str, progress: Progress) -> Answer:
        """Answer an unexpected exception: ``internal_error`` with a receipt when one can be written (SPEC §10)."""
        facts = progress.facts
        if progress.recorded or facts is None:
            # Before step 2 nothing identifies the call; after step 6 its receipt is already written.
            error = InternalError("internal error; the call was not executed" if facts is None else "internal error")
            return Answer(refusal_envelope(action, error), error)
        if progress.handler_started:
            error = InternalError("internal error after the action started; its outcome is recorded as failed")
            outcome = Outcome("failed", None, None, error.code, error.message, self.receipts.now())
            factory = self.factory(facts, "failed", error.code, progress.approval)
            write: Callable[[], LedgerEntry] = (
                partial(self.store.finish, facts.tenant_id, facts.nonce, outcome, factory)
                if progress.claimed
                else partial(self._append, facts, factory)  # a read_only call claims only with its outcome
            )
        else:
            error = InternalError("internal error; the call was not executed")
            factory = self.factory(facts, "denied", error.code, progress.approval)
            if progress.claimed:  # nothing ran: give the nonce back, as for a call that sent nothing
                write = partial(self.store.release_claim, facts.tenant_id, facts.nonce, facts.exec_id, factory)
            else:
                write = partial(self._append, facts, factory)
        entry: LedgerEntry | None = None
        try:
            with anyio.CancelScope(shield=True):
                entry = await self.write(write)
        except Exception:
            logger.exception("the internal error of %s could not be recorded either", facts.exec_id)
            if progress.handler_started:
                return not_recorded(action, facts)
            return Answer(refusal_envelope(action, error), error)
        if entry is None:  # pragma: no cover - a shielded scope does not swallow the result
            return Answer(refusal_envelope(action, error), error)
        status = "failed" if progress.handler_started else "denied"
        return self.answer(entry, facts, status, None, error)

    def _appended(self, entry: LedgerEntry) -> None:
        if self.on_append is not None:
            try:
                self.on_append(entry)
            except Exception:  # the receipt is committed: a failing observer must not fail the call
                logger.exception("on_append observer failed for seq %d", entry.seq)


def not_recorded(action: str, facts: CallFacts) -> Answer:
    """Answer a call whose handler ran and whose outcome the store did not take (``outcome_not_recorded``)."""
    lost = OutcomeNotRecordedError("the action ran but its outcome could not be recorded; do not assume it failed")
    envelope = refusal_envelope(action, lost)
    envelope.update(status="failed", exec_id=facts.exec_id)
    return Answer(envelope, lost)
