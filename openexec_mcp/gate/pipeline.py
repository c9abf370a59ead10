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

The steps are read here; their parts live beside: :mod:`.validation` (1), :mod:`.approvals` (3),
:mod:`.execution` (5), and :mod:`.recording` (6, and every receipt and answer after step 2).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import partial
from typing import Any

import anyio

from openexec_mcp.core.action import action_request_bytes
from openexec_mcp.core.canonical import canonicalize, sha256_hex
from openexec_mcp.core.clock import format_timestamp, utc_now
from openexec_mcp.core.nonce import NonceRecord
from openexec_mcp.core.receipt import ServerKey
from openexec_mcp.errors import (
    ActionRefusedError,
    ApprovalConsumedError,
    ApprovalGrantExhaustedError,
    ApprovalGrantRevokedError,
    InvalidRequestError,
    OpenExecError,
    PolicyError,
    StoreUnavailableError,
    UnknownActionError,
)
from openexec_mcp.faults import unsafe_fault_point
from openexec_mcp.gate.admission import Admission
from openexec_mcp.gate.answers import Answer, CallContext, GateAnswer, NeedsInput
from openexec_mcp.gate.approvals import AUTO_APPROVAL, Approver, Denied
from openexec_mcp.gate.catalog import Catalog
from openexec_mcp.gate.elicitation import InputRequired
from openexec_mcp.gate.envelope import refusal_envelope
from openexec_mcp.gate.execution import Execution, HandlerRunner
from openexec_mcp.gate.policy import Policy
from openexec_mcp.gate.receipts import CallFacts, NonceSource, ReceiptWriter
from openexec_mcp.gate.recording import Commit, NotRecorded, Progress, Recorder, Release, not_recorded
from openexec_mcp.gate.validation import validate_request
from openexec_mcp.registry import Action, Registry
from openexec_mcp.store.base import APPROVAL_CONSUMED, LedgerEntry, NonceClaim, Store
from openexec_mcp.store.grants import GrantRefused

__all__ = ["AUTO_APPROVAL", "Answer", "CallContext", "Gate", "GateAnswer", "NeedsInput"]

logger = logging.getLogger(__name__)


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
        self.recorder = Recorder(store, self.receipts, on_append)
        """Writes every receipt of a call and builds its answer (:mod:`.recording`)."""

    @property
    def on_append(self) -> Callable[[LedgerEntry], None] | None:
        """The observer of every ledger entry the gate appends, or ``None`` (settable)."""
        return self.recorder.on_append

    @on_append.setter
    def on_append(self, observer: Callable[[LedgerEntry], None] | None) -> None:
        self.recorder.on_append = observer

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
        progress = Progress()
        self.admission.enter()
        try:
            return await self._steps(action, arguments, ctx, progress)
        except NotRecorded:
            assert progress.facts is not None
            return not_recorded(action.name, progress.facts)
        except StoreUnavailableError as exc:
            # Nothing could be written, so nothing ran: the claim needs the store too (SPEC §4).
            logger.error("store unavailable while gating %r: %s", action.name, exc.message)
            refused = StoreUnavailableError("the store is unavailable; nothing ran, retry later")
            return Answer(refusal_envelope(action.name, refused), refused)
        except Exception:
            logger.exception("internal error while gating %r", action.name)
            return await self.recorder.fail_closed(action.name, progress)
        finally:
            self.admission.leave()

    async def _steps(self, action: Action, arguments: Any, ctx: CallContext, progress: Progress) -> GateAnswer:
        # (1): validate; nothing is recorded for a refusal here.
        try:
            argument, payload, payload_bytes, nonce, nonce_source = await self._validate(action, arguments, ctx)
        except InvalidRequestError as exc:
            return Answer(refusal_envelope(action.name, exc), exc)
        # (2): the action hash binds everything that follows to this exact call.
        request_bytes = action_request_bytes(action.name, nonce, payload_bytes)
        facts = CallFacts(
            exec_id=secrets.token_hex(16),
            tenant_id=ctx.tenant_id,
            action=action.name,
            action_hash=sha256_hex(request_bytes),
            nonce=nonce,
            nonce_source=nonce_source,
            run_id=ctx.run_id,
            started_at=format_timestamp(self._clock()),
            upstream=action.upstream,
        )
        progress.facts = facts
        # (3): the action's own refusal, then the approval; nothing is consumed.
        if action.precheck is not None:
            try:
                action.precheck(argument)
            except ActionRefusedError as exc:
                return await self.recorder.deny(exc, facts, AUTO_APPROVAL)
        approval: Mapping[str, Any] = AUTO_APPROVAL
        approval_id: str | None = None
        approval_keep_until: str | None = None
        grant_id: str | None = None
        try:
            policy = self.policy.approval_for(action, payload, ctx.tenant_id)  # rules first (SPEC §11)
        except PolicyError as exc:
            return await self.recorder.deny(exc, facts, AUTO_APPROVAL)
        if policy != "auto":
            # Nonce errors come before approval errors: nobody is asked to approve a used nonce.
            record = await self.recorder.read(self.store.get_nonce, ctx.tenant_id, nonce)
            if record is not None:
                return await self.recorder.answer_existing(record, facts)
            request = {"action": action.name, "payload": payload, "nonce": nonce}
            decision = await self.approver.decide(
                policy,
                action_request=request,
                action_hash=facts.action_hash,
                tenant_id=ctx.tenant_id,
                artifact=ctx.approval_artifact,
                elicitor=ctx.elicitor,
                now=self._clock(),
            )
            if isinstance(decision, InputRequired):
                return NeedsInput(decision)
            if isinstance(decision, Denied):
                pending = None
                if decision.open_request:
                    opened = await self.approver.open_request(
                        tenant_id=ctx.tenant_id,
                        action_request=request,
                        action_hash=facts.action_hash,
                        now=self._clock(),
                    )
                    pending = {
                        "request_id": opened.request_id,
                        "action_hash": opened.action_hash,
                        "expires_at": opened.expires_at,
                    }
                return await self.recorder.deny(decision.error, facts, decision.receipt_approval, pending)
            approval, approval_id = decision.receipt_approval, decision.approval_id
            approval_keep_until = decision.keep_until
            grant_id = decision.grant_id
        progress.approval = approval
        # (4): claim the nonce durably as 'started', consuming the approval_id with it.
        claim = NonceClaim(
            tenant_id=ctx.tenant_id,
            nonce=nonce,
            action=action.name,
            action_hash=facts.action_hash,
            exec_id=facts.exec_id,
            run_id=ctx.run_id,
            approval=_approval_text(approval),
            started_at=facts.started_at,
            approval_id=approval_id,
            approval_keep_until=approval_keep_until,
            request=request_bytes.decode(),
            extra=facts.extra_text(),
        )
        if action.read_only and policy == "auto":
            return await self._read_only(action, argument, claim, facts, progress)
        if grant_id is not None:
            # SPEC §13: one use of the grant is consumed in the transaction that claims the nonce.
            claimed = await self.recorder.write(self.store.claim_nonce_with_grant, claim, grant_id)
            if isinstance(claimed, GrantRefused):
                error: OpenExecError = ApprovalGrantRevokedError("the matching grant was revoked")
                if claimed.reason == "exhausted":
                    error = ApprovalGrantExhaustedError("the matching grant has no use left")
                return await self.recorder.deny(error, facts, approval)
            if isinstance(claimed, int):
                approval = {**approval, "use": claimed}
                progress.approval = approval
                claimed = None
        else:
            claimed = await self.recorder.write(self.store.claim_nonce, claim)
        if claimed is APPROVAL_CONSUMED:
            return await self.recorder.deny(ApprovalConsumedError("this approval was already used"), facts, approval)
        if isinstance(claimed, NonceRecord):
            return await self.recorder.answer_existing(claimed, facts)
        progress.claimed = True
        unsafe_fault_point("after_claim")
        # (5) and (6): the outcome finishes the claim; a call that sent nothing gives the nonce back.
        commit = partial(self.recorder.write_outcome, self.store.finish, facts)
        release = partial(self.recorder.write_outcome, self.store.release_claim, facts, facts.exec_id)
        return await self._run_and_record(action, argument, facts, progress, commit, release)

    async def _read_only(
        self, action: Action, argument: Any, claim: NonceClaim, facts: CallFacts, progress: Progress
    ) -> Answer:
        """Run steps 4-6 of a ``read_only`` action under ``auto`` approval: ONE durable commit, after the handler.

        The rule (README, "One durable commit where one suffices"): an action declared
        ``read_only`` has no side effect, so its claim and its outcome are one transaction after
        the handler. A crash before that commit loses only a read: nothing is recorded and the
        nonce stays free. A nonce already used is answered as in step 4 (``replayed``,
        ``nonce_conflict``, ``in_progress``, ``outcome_unknown``) without running the handler; one
        claimed by a concurrent duplicate while this handler ran is answered the same way, and
        this run's result is dropped.
        Side-effecting actions, and any action that consumes an approval, keep the durable claim
        before the handler (SPEC §4).
        """
        # A used nonce answers without running the read again (a retry after a lost answer).
        record = await self.recorder.read(self.store.get_nonce, claim.tenant_id, claim.nonce)
        if record is not None:
            return await self.recorder.answer_existing(record, facts)
        # One transaction claims the nonce and commits the outcome; a call that sent nothing claims nothing.
        commit = partial(self.recorder.write, self.store.claim_and_finish, claim)
        release = partial(self.recorder.append, facts)
        return await self._run_and_record(action, argument, facts, progress, commit, release)

    async def _run_and_record(
        self, action: Action, argument: Any, facts: CallFacts, progress: Progress, commit: Commit, release: Release
    ) -> Answer:
        """Run steps 5 and 6, shielded: a cancelled request still records its outcome and receipt.

        The receipt's ``approval`` is ``progress.approval``, the one step 4 claimed with.
        """
        with anyio.CancelScope(shield=True):
            progress.handler_started = True
            execution = await self.runner.run(action, argument)
            unsafe_fault_point("before_finish")
            approval = progress.approval
            return await self.recorder.record(execution, facts, approval, progress, commit=commit, release=release)
        raise AssertionError("unreachable: a shielded scope does not swallow the return")  # pragma: no cover

    async def _validate(
        self, action: Action, arguments: Any, ctx: CallContext
    ) -> tuple[Any, dict[str, Any], bytes, str, NonceSource]:
        """Step 1 (:func:`.validation.validate_request`); raises InvalidRequestError, and nothing is recorded."""
        return await validate_request(action, arguments, ctx.meta_nonce, self.policy.limits)

    async def run_handler(self, action: Action, argument: Any) -> Execution:
        """Run ``action``'s handler on a parsed argument with the gate's limits (step 5 alone).

        For ``ledger resolve --rerun`` (:mod:`openexec_mcp.ledger.resolve`), whose caller has already
        claimed the nonce; nothing is recorded here.
        """
        return await self.runner.run(action, argument)


_AUTO_APPROVAL_TEXT = canonicalize(dict(AUTO_APPROVAL)).decode()


def _approval_text(approval: Mapping[str, Any]) -> str:
    """JCS text of the receipt's approval object; the ``auto`` one is computed once at import."""
    return _AUTO_APPROVAL_TEXT if approval is AUTO_APPROVAL else canonicalize(dict(approval)).decode()
