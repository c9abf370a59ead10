"""The gate: every call, from every transport, passes here in one order (SPEC §3-§7, §10-§12).

Steps of :meth:`Gate.call`; the first that refuses decides the answer:

  0. admission: draining, the tenant's rate limit, a free worker for the action. A refusal
     records nothing (``shutting_down``, ``rate_limited``, ``action_saturated``).
  1. validate the request: exposed action, nonce (argument or ``_meta``), payload limits
     (SPEC §2: cheap bounds first), then the action's own validation (strict). A refusal here is
     ``invalid_request`` / ``unknown_action``: nothing is recorded.
  2. compute the action_hash (SPEC §3), from the canonical bytes of step 1.
  3. the action's precheck (``url_not_allowed``, ...), then for any policy but ``auto``: look the
     nonce up first (a used nonce answers as in step 4, and nobody is asked to approve it), then
     decide the approval (signed artifact, inbox, elicitation, ``deny``). Nothing is consumed; a
     refusal records a receipt and, when an approval is missing, a pending request in the inbox.
  4. nonce claim, one store transaction that also consumes the artifact's ``approval_id``: a nonce
     that is already claimed answers ``replayed``, ``nonce_conflict``, ``in_progress`` or
     ``outcome_unknown`` (SPEC §4) and nothing runs.
  5. run the handler (:mod:`.execution`), shielded from cancellation so that a claimed call
     always reaches step 6.
  6. commit the outcome and its signed receipt in one transaction: ``executed``, ``failed``,
     ``indeterminate`` (sent, no answer), or, when nothing was sent, release the claim and record
     ``denied`` (``upstream_unavailable``).

Every answer after step 2 carries a receipt appended to the ledger. :meth:`Gate.call` is the one
place that turns an unexpected exception into an answer (SPEC §10, fail closed, on record):
``denied`` / ``internal_error`` before the handler started, ``failed`` / ``internal_error``
after, each with a receipt whenever the store takes one. The handler never runs on a path that
was not fully checked.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import anyio
import anyio.to_thread

from openexec_mcp.core.action import action_request_bytes, parse_nonce
from openexec_mcp.core.canonical import canonicalize, check_json_value, exceeds_size, sha256_hex
from openexec_mcp.core.clock import format_timestamp, utc_now
from openexec_mcp.core.nonce import NonceRecord, Replay, decide_existing
from openexec_mcp.core.receipt import ServerKey
from openexec_mcp.errors import (
    ActionRefusedError,
    ApprovalConsumedError,
    ApprovalGrantExhaustedError,
    ApprovalGrantRevokedError,
    InternalError,
    InvalidRequestError,
    OpenExecError,
    OutcomeNotRecordedError,
    PolicyError,
    StoreUnavailableError,
    UnknownActionError,
)
from openexec_mcp.faults import unsafe_fault_point
from openexec_mcp.gate.admission import Admission
from openexec_mcp.gate.approvals import AUTO_APPROVAL, Approver, Denied, Elicitor, InputRequired
from openexec_mcp.gate.catalog import Catalog
from openexec_mcp.gate.envelope import refusal_envelope, result_envelope
from openexec_mcp.gate.execution import Execution, HandlerRunner
from openexec_mcp.gate.policy import Policy
from openexec_mcp.gate.receipts import CallFacts, NonceSource, ReceiptStatus, ReceiptWriter
from openexec_mcp.registry import Action, Registry
from openexec_mcp.store.base import APPROVAL_CONSUMED, LedgerEntry, NonceClaim, Outcome, ReceiptFactory, Store
from openexec_mcp.store.grants import GrantRefused

__all__ = ["AUTO_APPROVAL", "Answer", "CallContext", "Gate", "GateAnswer", "NeedsInput"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is calling, as established by the transport (trusted), and what came beside the arguments.

    Attributes:
        tenant_id: The tenant: from the bearer token, else the configured ``tenant_id``.
        run_id: The run this call belongs to (SPEC §7).
        approval_artifact: The untrusted approval artifact that came with the call, if any.
        elicitor: The client's elicitation channel, if the transport has one.
        meta_nonce: The untrusted ``_meta["dev.openexec/nonce"]`` of the request, if any (SPEC §11).
    """

    tenant_id: str
    run_id: str
    approval_artifact: Any = None
    elicitor: Elicitor | None = None
    meta_nonce: Any = None


@dataclass(frozen=True, slots=True)
class Answer:
    """The gate's answer: the result envelope of SPEC §6 and the error that decided it, if any.

    Attributes:
        envelope: The JSON object sent to the client (``status`` always set).
        error: The refusal or failure, or ``None`` when executed or replayed.
    """

    envelope: dict[str, Any]
    error: OpenExecError | None

    @property
    def status(self) -> str:
        """``executed``, ``replayed``, ``failed``, ``denied`` or ``indeterminate``."""
        return str(self.envelope["status"])


@dataclass(frozen=True, slots=True)
class NeedsInput:
    """The user's confirmation must come in a retry of the same call (2026-07-28 elicitation).

    Nothing was recorded; the nonce is still free. It has no envelope: the transport answers
    with an ``input_required`` result instead (SPEC §5, source 4).

    Attributes:
        input_required: The question to ask and the action_hash it is bound to.
        status: Always ``input_required``.
        error: Always ``None``.
    """

    input_required: InputRequired
    status: str = "input_required"
    error: None = None

    @property
    def envelope(self) -> dict[str, Any]:
        """Raise :class:`TypeError`: a call waiting for the user's input has no result envelope yet."""
        raise TypeError("the call waits for the user's input (input_required); it has no envelope yet")


GateAnswer = Answer | NeedsInput
"""What :meth:`Gate.call` returns."""


@dataclass(slots=True)
class _Progress:
    """How far one call got: decides what an unexpected exception records (SPEC §10)."""

    facts: CallFacts | None = None
    approval: Mapping[str, Any] = field(default_factory=lambda: AUTO_APPROVAL)
    claimed: bool = False
    handler_started: bool = False
    recorded: bool = False


class Gate:
    """The ordered pipeline from a tool call to a result with a receipt.

    Args:
        registry: Every loaded action.
        policy: The frozen effective policy (which actions are exposed, how each is approved).
        store: The nonce table and ledger.
        server_key: Signs every receipt.
        server_id: The ledger's ``log_id`` (SPEC §7).
        approver: Decides non-``auto`` approvals (signed artifacts, inbox, elicitation).
        clock: Returns the current aware UTC datetime; read once per timestamp.
        rate_limit_per_second: Calls per second per tenant (0: no limit); refusals record nothing.
        rate_limit_burst: Calls a tenant may make at once.
        on_append: Called on the event loop with every ledger entry the gate appends (e.g. to sign
            checkpoints after append batches); must be cheap, and an exception in it is only logged.
    """

    def __init__(
        self,
        *,
        registry: Registry,
        policy: Policy,
        store: Store,
        server_key: ServerKey,
        server_id: str,
        approver: Approver,
        clock: Callable[[], datetime] = utc_now,
        rate_limit_per_second: float = 0,
        rate_limit_burst: int = 50,
        on_append: Callable[[LedgerEntry], None] | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        self.registry = registry
        self.policy = policy
        self.actions = catalog if catalog is not None else Catalog(registry.values())
        """Every action by name, including those that appear at run time (upstream tools, SPEC §11)."""
        self.store = store
        self.server_key = server_key
        self.server_id = server_id
        self.approver = approver
        self.admission = Admission(rate_limit_per_second, rate_limit_burst)
        self.runner = HandlerRunner(dict(policy.limits), clock)
        self._clock = clock
        self.receipts = ReceiptWriter(
            server_key=server_key, server_id=server_id, policy_hash=policy.policy_hash, clock=clock
        )
        """Builds this process's receipts (also used at start-up and by ``ledger resolve``)."""
        self.on_append = on_append

    @property
    def in_flight(self) -> int:
        """How many calls are past admission and not yet answered."""
        return self.admission.in_flight

    @property
    def draining(self) -> bool:
        """Whether new calls are refused with ``shutting_down``."""
        return self.admission.draining

    async def drain(self, grace_seconds: float) -> int:
        """Refuse new calls and wait up to ``grace_seconds`` for running ones; return how many remain."""
        return await self.admission.drain(grace_seconds)

    def exposed(self) -> list[Action]:
        """Return the exposed actions, by name."""
        return [action for action in self.actions.all() if self.policy.exposes(action)]

    def action(self, name: Any) -> Action | None:
        """Return the exposed action called ``name``, or ``None``."""
        if not isinstance(name, str):
            return None
        action = self.actions.get(name)
        return action if action is not None and self.policy.exposes(action) else None

    async def call(self, name: Any, arguments: Any, ctx: CallContext) -> GateAnswer:
        """Run one call through the gate (see the module docstring for the steps).

        Args:
            name: The untrusted action (tool) name.
            arguments: The untrusted tool arguments, including ``nonce``.
            ctx: The caller, as established by the transport.

        Returns:
            The answer; never raises for anything a caller can send, nor for a failure inside.
        """
        action = self.action(name)
        if action is None:
            refused = UnknownActionError(f"unknown action {str(name)[:64]!r}")
            return Answer(refusal_envelope(name, refused), refused)
        # (0): admission; nothing is recorded for a refusal here.
        try:
            self.admission.admit(ctx.tenant_id)
            self.runner.admit(action)
        except OpenExecError as exc:
            return Answer(refusal_envelope(action.name, exc), exc)
        progress = _Progress()
        self.admission.enter()
        try:
            return await self._steps(action, arguments, ctx, progress)
        except _NotRecorded:
            assert progress.facts is not None
            return self._not_recorded(action, progress.facts)
        except StoreUnavailableError as exc:
            # Nothing could be written, so nothing ran: the claim needs the store too (SPEC §4).
            logger.error("store unavailable while gating %r: %s", action.name, exc.message)
            refused = StoreUnavailableError("the store is unavailable; nothing ran, retry later")
            return Answer(refusal_envelope(action.name, refused), refused)
        except Exception:
            logger.exception("internal error while gating %r", action.name)
            return await self._fail_closed(action, progress)
        finally:
            self.admission.leave()

    async def _steps(self, action: Action, arguments: Any, ctx: CallContext, progress: _Progress) -> GateAnswer:
        # (1): validate; nothing is recorded for a refusal here.
        try:
            argument, payload, payload_bytes, nonce, nonce_source = await self._validate(action, arguments, ctx)
        except InvalidRequestError as exc:
            return Answer(refusal_envelope(action.name, exc), exc)
        # (2): the action hash binds everything that follows to this exact call.
        request_bytes = action_request_bytes(action.name, nonce, payload_bytes)
        facts = CallFacts(
            exec_id=secrets.token_hex(16), tenant_id=ctx.tenant_id, action=action.name,
            action_hash=sha256_hex(request_bytes), nonce=nonce, nonce_source=nonce_source, run_id=ctx.run_id,
            started_at=format_timestamp(self._clock()), upstream=action.upstream,
        )  # fmt: skip
        progress.facts = facts
        # (3): the action's own refusal, then the approval; nothing is consumed.
        if action.precheck is not None:
            try:
                action.precheck(argument)
            except ActionRefusedError as exc:
                return await self._deny(exc, facts, AUTO_APPROVAL)
        approval: Mapping[str, Any] = AUTO_APPROVAL
        approval_id: str | None = None
        approval_keep_until: str | None = None
        grant_id: str | None = None
        try:
            policy = self.policy.approval_for(action, payload, ctx.tenant_id)  # rules first (SPEC §11)
        except PolicyError as exc:
            return await self._deny(exc, facts, AUTO_APPROVAL)
        if policy != "auto":
            # Nonce errors come before approval errors: nobody is asked to approve a used nonce.
            record = await anyio.to_thread.run_sync(self.store.get_nonce, ctx.tenant_id, nonce)
            if record is not None:
                return await self._answer_existing(record, facts)
            request = {"action": action.name, "payload": payload, "nonce": nonce}
            decision = await self.approver.decide(
                policy, action_request=request, action_hash=facts.action_hash, tenant_id=ctx.tenant_id,
                artifact=ctx.approval_artifact, elicitor=ctx.elicitor, now=self._clock(),
            )  # fmt: skip
            if isinstance(decision, InputRequired):
                return NeedsInput(decision)
            if isinstance(decision, Denied):
                pending = None
                if decision.open_request:
                    opened = await self.approver.open_request(
                        tenant_id=ctx.tenant_id, action_request=request, action_hash=facts.action_hash,
                        now=self._clock(),
                    )  # fmt: skip
                    pending = {"request_id": opened.request_id, "action_hash": opened.action_hash,
                               "expires_at": opened.expires_at}  # fmt: skip
                return await self._deny(decision.error, facts, decision.receipt_approval, pending)
            approval, approval_id = decision.receipt_approval, decision.approval_id
            approval_keep_until = decision.keep_until
            grant_id = decision.grant_id
        progress.approval = approval
        # (4): claim the nonce durably as 'started', consuming the approval_id with it.
        claim = NonceClaim(
            tenant_id=ctx.tenant_id, nonce=nonce, action=action.name, action_hash=facts.action_hash,
            exec_id=facts.exec_id, run_id=ctx.run_id, approval=_approval_text(approval), started_at=facts.started_at,
            approval_id=approval_id, approval_keep_until=approval_keep_until, request=request_bytes.decode(),
            extra=facts.extra_text(),
        )  # fmt: skip
        if grant_id is not None:
            # SPEC §13: one use of the grant is consumed in the transaction that claims the nonce.
            claimed = await anyio.to_thread.run_sync(self.store.claim_nonce_with_grant, claim, grant_id)
            if isinstance(claimed, GrantRefused):
                error: OpenExecError = ApprovalGrantRevokedError("the matching grant was revoked")
                if claimed.reason == "exhausted":
                    error = ApprovalGrantExhaustedError("the matching grant has no use left")
                return await self._deny(error, facts, approval)
            if isinstance(claimed, int):
                approval = {**approval, "use": claimed}
                progress.approval = approval
                claimed = None
        else:
            claimed = await anyio.to_thread.run_sync(self.store.claim_nonce, claim)
        if claimed is APPROVAL_CONSUMED:
            return await self._deny(ApprovalConsumedError("this approval was already used"), facts, approval)
        if isinstance(claimed, NonceRecord):
            return await self._answer_existing(claimed, facts)
        progress.claimed = True
        unsafe_fault_point("after_claim")
        # (5) and (6): shielded, so a cancelled request still records its outcome and receipt.
        with anyio.CancelScope(shield=True):
            progress.handler_started = True
            execution = await self.runner.run(action, argument)
            unsafe_fault_point("before_finish")
            return await self._record(execution, facts, approval, progress)
        raise AssertionError("unreachable: a shielded scope does not swallow the return")  # pragma: no cover

    # -- steps ----------------------------------------------------------------------------------

    async def _validate(
        self, action: Action, arguments: Any, ctx: CallContext
    ) -> tuple[Any, dict[str, Any], bytes, str, NonceSource]:
        """Step 1: return ``(argument, payload, payload_bytes, nonce, nonce_source)``.

        Raises:
            InvalidRequestError: Anything malformed; nothing is recorded.
        """
        if not isinstance(arguments, dict):
            raise InvalidRequestError("arguments must be a JSON object")
        payload: dict[str, Any] = dict(arguments)  # pyright: ignore[reportUnknownArgumentType]
        nonce, nonce_source = self._nonce(action, payload, ctx)
        limits = self.policy.limits
        # Cheap bounds first: a payload that cannot fit is refused before any canonicalization.
        if exceeds_size(payload, max_bytes=limits["max_payload_bytes"]):
            raise InvalidRequestError(f"payload exceeds {limits['max_payload_bytes']} bytes")
        payload_bytes = check_json_value(payload, max_depth=limits["max_depth"], max_bytes=limits["max_payload_bytes"])
        if len(payload_bytes) > _INLINE_PARSE_BYTES:
            # Heavy validation off the event loop: a large payload must not stall other clients.
            argument = await anyio.to_thread.run_sync(action.parse_payload, payload, payload_bytes)
        else:
            argument = action.parse_payload(payload, payload_bytes)
        return argument, payload, payload_bytes, nonce, nonce_source

    def _nonce(self, action: Action, payload: dict[str, Any], ctx: CallContext) -> tuple[str, NonceSource]:
        """Return the gate's nonce and its source: ``_meta``, else the ``nonce`` argument, else a server nonce."""
        if ctx.meta_nonce is not None:
            if not action.declares_nonce:
                payload.pop("nonce", None)  # the reserved argument is not payload, whichever carries the nonce
            return parse_nonce(ctx.meta_nonce), "client"
        if not action.declares_nonce and "nonce" in payload:
            return parse_nonce(payload.pop("nonce")), "client"
        if not action.nonce_required:
            return "srv:" + secrets.token_hex(16), "server"
        where = '_meta["dev.openexec/nonce"]' if action.declares_nonce else "the 'nonce' argument"
        raise InvalidRequestError(f"a nonce is required in {where}")

    async def _record(
        self, execution: Execution, facts: CallFacts, approval: Mapping[str, Any], progress: _Progress
    ) -> Answer:
        """Step 6: commit the outcome (or release the claim) with its receipt."""
        if execution.kind == "not_sent":
            assert execution.error is not None
            factory = self._factory(facts, "denied", execution.error.code, approval)
            entry = await self._store_outcome(self.store.release_claim, facts, facts.exec_id, factory)
            progress.recorded = True
            return self._finish_answer(entry, facts, "denied", None, execution.error)
        outcome = execution.outcome
        status: ReceiptStatus = "indeterminate" if execution.kind == "indeterminate" else outcome.status  # type: ignore[assignment]
        factory = self.receipts.factory(
            facts, status=status, error_code=outcome.error_code, approval=approval, result_hash=outcome.result_hash,
            original_exec_id=None, finished_at=outcome.finished_at,
        )  # fmt: skip
        entry = await self._store_outcome(self.store.finish, facts, outcome, factory)
        progress.recorded = True
        unsafe_fault_point("after_finish")
        return self._finish_answer(entry, facts, status, execution.result, execution.error)

    async def _store_outcome(self, method: Callable[..., LedgerEntry], facts: CallFacts, *args: Any) -> LedgerEntry:
        try:
            return await anyio.to_thread.run_sync(method, facts.tenant_id, facts.nonce, *args)
        except StoreUnavailableError as exc:
            # The handler ran but its outcome is not recorded: never say "denied" here. The claim
            # stays 'started', so the nonce answers in_progress, then outcome_unknown after restart.
            logger.error("outcome of %s not recorded: %s", facts.exec_id, exc.message)
            raise _NotRecorded from None

    def _finish_answer(
        self, entry: LedgerEntry, facts: CallFacts, status: str, result: Any, error: OpenExecError | None
    ) -> Answer:
        self._appended(entry)
        error_json = error.to_dict() if error is not None else None
        return Answer(result_envelope(entry, facts.action, status, result, error_json), error)

    async def _answer_existing(self, record: NonceRecord, facts: CallFacts) -> Answer:
        decision = decide_existing(record, facts.action_hash)
        if not isinstance(decision, Replay):
            return await self._deny(decision, facts, AUTO_APPROVAL)
        original = decision.original
        # A replay of a failed call reports the original failure; it never re-runs the handler.
        original_error = (
            {"code": original.error_code, "message": original.error_message} if original.status == "failed" else None
        )
        factory = self.receipts.factory(
            facts, status="replayed", error_code=original.error_code, approval=json.loads(original.approval),
            result_hash=original.result_hash, original_exec_id=original.exec_id, finished_at=self.receipts.now(),
        )  # fmt: skip
        entry = await anyio.to_thread.run_sync(self._append, factory, facts)
        self._appended(entry)
        result = json.loads(original.result) if original.result is not None else None
        return Answer(result_envelope(entry, facts.action, "replayed", result, original_error), None)

    async def _deny(
        self, error: OpenExecError, facts: CallFacts, approval: Mapping[str, Any],
        approval_request: Mapping[str, Any] | None = None,
    ) -> Answer:  # fmt: skip
        logger.info("denied %s: %s", facts.action, error.code)
        entry = await anyio.to_thread.run_sync(
            self._append, self._factory(facts, "denied", error.code, approval), facts
        )
        self._appended(entry)
        envelope = result_envelope(entry, facts.action, "denied", None, error.to_dict())
        envelope["approval_request"] = dict(approval_request) if approval_request else None
        return Answer(envelope, error)

    async def _fail_closed(self, action: Action, progress: _Progress) -> Answer:
        """Answer an unexpected exception: ``internal_error`` with a receipt when one can be written (SPEC §10)."""
        facts = progress.facts
        if progress.recorded or facts is None:
            # Before step 2 nothing identifies the call; after step 6 its receipt is already written.
            error = InternalError("internal error; the call was not executed" if facts is None else "internal error")
            return Answer(refusal_envelope(action.name, error), error)
        if progress.handler_started:
            error = InternalError("internal error after the action started; its outcome is recorded as failed")
            outcome = Outcome("failed", None, None, error.code, error.message, self.receipts.now())
            factory = self._factory(facts, "failed", error.code, progress.approval)
            write: Callable[[], LedgerEntry] = partial(
                self.store.finish, facts.tenant_id, facts.nonce, outcome, factory
            )
        else:
            error = InternalError("internal error; the call was not executed")
            factory = self._factory(facts, "denied", error.code, progress.approval)
            if progress.claimed:  # nothing ran: give the nonce back, as for a call that sent nothing
                write = partial(self.store.release_claim, facts.tenant_id, facts.nonce, facts.exec_id, factory)
            else:
                write = partial(self._append, factory, facts)
        entry: LedgerEntry | None = None
        try:
            with anyio.CancelScope(shield=True):
                entry = await anyio.to_thread.run_sync(write)
        except Exception:
            logger.exception("the internal error of %s could not be recorded either", facts.exec_id)
            if progress.handler_started:
                return self._not_recorded(action, facts)
            return Answer(refusal_envelope(action.name, error), error)
        if entry is None:  # pragma: no cover - a shielded scope does not swallow the result
            return Answer(refusal_envelope(action.name, error), error)
        status = "failed" if progress.handler_started else "denied"
        return self._finish_answer(entry, facts, status, None, error)

    def _not_recorded(self, action: Action, facts: CallFacts) -> Answer:
        lost = OutcomeNotRecordedError("the action ran but its outcome could not be recorded; do not assume it failed")
        envelope = refusal_envelope(action.name, lost)
        envelope.update(status="failed", exec_id=facts.exec_id)
        return Answer(envelope, lost)

    # -- receipts -------------------------------------------------------------------------------

    def _factory(
        self, facts: CallFacts, status: ReceiptStatus, error_code: str | None, approval: Mapping[str, Any]
    ) -> ReceiptFactory:
        return self.receipts.factory(
            facts, status=status, error_code=error_code, approval=approval, result_hash=None, original_exec_id=None,
            finished_at=self.receipts.now(),
        )  # fmt: skip

    def _appended(self, entry: LedgerEntry) -> None:
        if self.on_append is not None:
            try:
                self.on_append(entry)
            except Exception:  # the receipt is committed: a failing observer must not fail the call
                logger.exception("on_append observer failed for seq %d", entry.seq)

    def _append(self, factory: ReceiptFactory, facts: CallFacts) -> LedgerEntry:
        return self.store.append(factory, tenant_id=facts.tenant_id, run_id=facts.run_id, action=facts.action)

    async def run_handler(self, action: Action, argument: Any) -> Execution:
        """Run ``action``'s handler on a parsed argument with the gate's limits (step 5 alone).

        For ``ledger resolve --rerun`` (:mod:`openexec_mcp.ledger.resolve`), whose caller has already
        claimed the nonce; nothing is recorded here.
        """
        return await self.runner.run(action, argument)


class _NotRecorded(Exception):
    """The handler ran and the store did not take its outcome (answered ``outcome_not_recorded``)."""


_INLINE_PARSE_BYTES = 16 * 1024
"""Payloads up to this canonical size are validated on the event loop; larger ones on a thread."""

_AUTO_APPROVAL_TEXT = canonicalize(dict(AUTO_APPROVAL)).decode()


def _approval_text(approval: Mapping[str, Any]) -> str:
    """JCS text of the receipt's approval object; the ``auto`` one is computed once at import."""
    return _AUTO_APPROVAL_TEXT if approval is AUTO_APPROVAL else canonicalize(dict(approval)).decode()
