"""The gate: every call, from every transport, passes here in one order (SPEC §3, §4, §6, §7).

Steps of :meth:`Gate.call`; the first that refuses decides the answer:

  1. validate the request: exposed action, nonce, payload limits (SPEC §2), input model
     (strict: no type coercion). A refusal here is ``invalid_request``: nothing is recorded.
  2. compute the action_hash (SPEC §3), from the canonical bytes of step 1.
  3. for any policy but ``auto``: look the nonce up first (a used nonce answers as in step 4,
     and nobody is asked to approve it), then decide the approval (signed artifact, inbox,
     elicitation, ``deny``). Nothing is consumed; a refusal records a receipt and, when an
     approval is missing, a pending request in the approval inbox.
  4. nonce claim, one store transaction that also consumes the artifact's ``approval_id``: a nonce
     that is already claimed answers ``replayed``, ``nonce_conflict``, ``in_progress`` or
     ``outcome_unknown`` (SPEC §4) and nothing runs.
  5. run the handler, shielded from cancellation so that a claimed call always reaches step 6.
  6. commit the outcome and its signed receipt in one transaction.

Every answer after step 1 carries a receipt appended to the ledger. Any unexpected exception
before step 5 denies the call (fail closed): the handler never runs on a path that was not fully
checked.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio
import anyio.to_thread
from pydantic import BaseModel, ValidationError

from openexec_mcp.core.action import action_request_bytes, parse_nonce
from openexec_mcp.core.canonical import canonicalize, check_json_value, sha256_hex
from openexec_mcp.core.clock import format_timestamp, utc_now
from openexec_mcp.core.nonce import NonceRecord, Replay, decide_existing
from openexec_mcp.core.receipt import ServerKey
from openexec_mcp.errors import (
    ApprovalConsumedError,
    ExecutionError,
    HandlerError,
    HandlerTimeoutError,
    InvalidRequestError,
    InvalidResultError,
    MalformedInputError,
    OpenExecError,
    RateLimitedError,
    ShuttingDownError,
    StoreUnavailableError,
    UnknownActionError,
)
from openexec_mcp.faults import unsafe_fault_point
from openexec_mcp.gate.admission import TokenBucket
from openexec_mcp.gate.approvals import AUTO_APPROVAL, Approver, Denied, Elicitor, InputRequired
from openexec_mcp.gate.envelope import refusal_envelope, result_envelope
from openexec_mcp.gate.policy import Policy
from openexec_mcp.gate.receipts import ReceiptWriter
from openexec_mcp.ledger.retention import NonceSweeper
from openexec_mcp.registry import Action, Registry
from openexec_mcp.store.base import APPROVAL_CONSUMED, LedgerEntry, NonceClaim, Outcome, ReceiptFactory, Store

__all__ = ["AUTO_APPROVAL", "Answer", "CallContext", "Gate"]

logger = logging.getLogger("openexec_mcp.gate.pipeline")


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is calling, as established by the transport (trusted).

    Attributes:
        tenant_id: The tenant: from the bearer token, else the configured ``tenant_id``.
        run_id: The run this call belongs to (SPEC §7).
        approval_artifact: The untrusted approval artifact that came with the call, if any.
        elicitor: The client's elicitation channel, if the transport has one.
    """

    tenant_id: str
    run_id: str
    approval_artifact: Any = None
    elicitor: Elicitor | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """The gate's answer: the result envelope of SPEC §6 and the error that decided it, if any.

    Attributes:
        envelope: The JSON object sent to the client.
        error: The refusal or failure, or ``None`` when executed or replayed.
        input_required: Set (with an empty envelope) when the user's confirmation must come in a
            retry of the same call (2026-07-28 elicitation); nothing was recorded.
    """

    envelope: dict[str, Any]
    error: OpenExecError | None
    input_required: InputRequired | None = None

    @property
    def status(self) -> str:
        """``executed``, ``replayed``, ``failed`` or ``denied``."""
        return str(self.envelope["status"])


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
        nonce_retention_seconds: ``nonce.retention_seconds``; when set, calls piggy-back an hourly
            background sweep of older nonce records (:mod:`openexec_mcp.ledger.retention`).
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
        nonce_retention_seconds: int | None = None,
    ) -> None:
        self.registry = registry
        self.approver = approver
        self._rate_limit = TokenBucket(rate_limit_per_second, rate_limit_burst)
        self._in_flight = 0
        self.draining = False
        """Set on shutdown: new calls are refused with ``shutting_down``; running ones finish."""
        self.policy = policy
        self.store = store
        self.server_key = server_key
        self.server_id = server_id
        self._clock = clock
        self.receipts = ReceiptWriter(
            server_key=server_key, server_id=server_id, policy_hash=policy.policy_hash, clock=clock
        )
        """Builds this process's receipts (also used at start-up and by ``ledger resolve``)."""
        self.on_append = on_append
        self.sweeper = (
            NonceSweeper(store, nonce_retention_seconds, clock, recover=self._recover_dead_replicas())
            if nonce_retention_seconds is not None
            else None
        )
        """Prunes nonce records past the retention horizon (SPEC §4); ``None`` when retention is off."""

    @property
    def in_flight(self) -> int:
        """How many calls are past validation and not yet answered."""
        return self._in_flight

    def _recover_dead_replicas(self) -> Callable[[], int] | None:
        """Return the periodic recovery of dead replicas' calls, where the store can tell them apart.

        PostgreSQL holds a lock per live replica, so ``recover_started`` there touches only calls
        of replicas that died. SQLite cannot tell, and every ``started`` row may be this process's
        own running call: there, recovery happens only at start-up.
        """
        if self.store.kind != "postgresql":
            return None
        store, receipts = self.store, self.receipts
        return lambda: len(store.recover_started(receipts.for_indeterminate))

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

    def exposed(self) -> list[Action]:
        """Return the exposed actions, by name."""
        return [self.registry[name] for name in sorted(self.policy.approvals)]

    async def call(self, name: Any, arguments: Any, ctx: CallContext) -> Answer:
        """Run one call through the gate (see the module docstring for the steps).

        Args:
            name: The untrusted action (tool) name.
            arguments: The untrusted tool arguments, including ``nonce``.
            ctx: The caller, as established by the transport.

        Returns:
            The answer; never raises for anything a caller can send.
        """
        if self.draining:
            refused = ShuttingDownError("the server is shutting down; retry later")
            return Answer(refusal_envelope(name, refused), refused)
        if not self._rate_limit.allow(ctx.tenant_id):
            refused = RateLimitedError("too many calls for this tenant; retry later")
            return Answer(refusal_envelope(name, refused), refused)
        if self.sweeper is not None:
            self.sweeper.maybe_sweep()  # a clock read, unless an hourly sweep is due (background thread)
        try:
            # (1): validate; nothing is recorded for a refusal here.
            action, payload, payload_bytes, nonce, model = self._validate(name, arguments)
            # (2): the action hash binds everything that follows to this exact call.
            request_bytes = action_request_bytes(action.name, nonce, payload_bytes)
            action_hash = sha256_hex(request_bytes)
        except InvalidRequestError as exc:
            return Answer(refusal_envelope(name, exc), exc)
        self._in_flight += 1
        try:
            return await self._guarded(action, payload, nonce, model, action_hash, request_bytes.decode(), ctx)
        except StoreUnavailableError as exc:
            logger.error("store unavailable: %s", exc.message)
            return Answer(refusal_envelope(action.name, exc), exc)
        finally:
            self._in_flight -= 1

    async def _guarded(
        self, action: Action, payload: dict[str, Any], nonce: str, model: BaseModel, action_hash: str,
        request_text: str, ctx: CallContext,
    ) -> Answer:  # fmt: skip
        exec_id = secrets.token_hex(16)
        now = self._clock()
        started_at = format_timestamp(now)
        receipt_fields: dict[str, Any] = {
            "exec_id": exec_id, "tenant_id": ctx.tenant_id, "action": action.name, "action_hash": action_hash,
            "nonce": nonce, "run_id": ctx.run_id, "started_at": started_at,
        }  # fmt: skip
        approval: Mapping[str, Any] = AUTO_APPROVAL
        approval_id: str | None = None
        policy = self.policy.approvals[action.name]
        if policy != "auto":
            # (3): nonce errors come before approval errors, and nobody is asked to approve a
            # call whose nonce is already used; then the approval decision, consuming nothing.
            record = await anyio.to_thread.run_sync(self.store.get_nonce, ctx.tenant_id, nonce)
            if record is not None:
                return await self._answer_existing(record, receipt_fields, action_hash)
            request = {"action": action.name, "payload": payload, "nonce": nonce}
            decision = await self.approver.decide(
                policy, action_request=request, action_hash=action_hash, tenant_id=ctx.tenant_id,
                artifact=ctx.approval_artifact, elicitor=ctx.elicitor, now=now,
            )  # fmt: skip
            if isinstance(decision, InputRequired):
                return Answer({}, None, input_required=decision)
            if isinstance(decision, Denied):
                pending = None
                if decision.open_request:
                    opened = await self.approver.open_request(
                        tenant_id=ctx.tenant_id, action_request=request, action_hash=action_hash, now=now
                    )
                    pending = {"request_id": opened.request_id, "action_hash": opened.action_hash,
                               "expires_at": opened.expires_at}  # fmt: skip
                return await self._deny(decision.error, receipt_fields, decision.receipt_approval, pending)
            approval, approval_id = decision.receipt_approval, decision.approval_id
        # (4): claim the nonce durably as 'started', consuming the approval_id with it.
        claim = NonceClaim(
            tenant_id=ctx.tenant_id, nonce=nonce, action=action.name, action_hash=action_hash, exec_id=exec_id,
            run_id=ctx.run_id, approval=_approval_text(approval), started_at=started_at,
            approval_id=approval_id, request=request_text,
        )  # fmt: skip
        claimed = await anyio.to_thread.run_sync(self.store.claim_nonce, claim)
        if claimed is APPROVAL_CONSUMED:
            return await self._deny(ApprovalConsumedError("this approval was already used"), receipt_fields, approval)
        if isinstance(claimed, NonceRecord):
            return await self._answer_existing(claimed, receipt_fields, action_hash)
        unsafe_fault_point("after_claim")
        # (5) and (6): shielded, so a cancelled request still records its outcome and receipt.
        with anyio.CancelScope(shield=True):
            return await self._execute(action, model, nonce, receipt_fields, approval, ctx)
        raise AssertionError("unreachable: a shielded scope does not swallow the return")  # pragma: no cover

    # -- steps ----------------------------------------------------------------------------------

    def _validate(self, name: Any, arguments: Any) -> tuple[Action, dict[str, Any], bytes, str, BaseModel]:
        if not isinstance(name, str) or name not in self.policy.approvals:
            raise UnknownActionError(f"unknown action {str(name)[:64]!r}")
        action = self.registry[name]
        if not isinstance(arguments, dict):
            raise MalformedInputError("arguments must be a JSON object")
        payload: dict[str, Any] = dict(arguments)  # pyright: ignore[reportUnknownArgumentType]
        nonce = parse_nonce(payload.pop("nonce", None))
        payload_bytes = check_json_value(
            payload, max_depth=self.policy.limits["max_depth"], max_bytes=self.policy.limits["max_payload_bytes"]
        )
        if not action.accepts_extra_fields():
            declared = {f.alias or n for n, f in action.input_model.model_fields.items()}
            unknown = sorted(set(payload) - declared)
            if unknown:
                raise InvalidRequestError(f"unknown argument(s) for {action.name!r}: {', '.join(unknown)[:200]}")
        try:
            model = action.input_model.model_validate_json(payload_bytes, strict=True)
        except ValidationError as exc:
            # Field locations and messages only: the rejected values are the caller's data.
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'payload'}: {err['msg']}" for err in exc.errors()[:5]
            )
            raise InvalidRequestError(f"invalid arguments for {action.name!r}: {problems}") from None
        return action, payload, payload_bytes, nonce, model

    async def _execute(
        self, action: Action, model: BaseModel, nonce: str, fields: Mapping[str, Any], approval: Mapping[str, Any],
        ctx: CallContext,
    ) -> Answer:  # fmt: skip
        outcome, result, error = await self._run_handler(action, model)
        unsafe_fault_point("before_finish")
        factory = self.receipts.factory(
            fields, status=outcome.status, error_code=outcome.error_code, approval=approval,
            result_hash=outcome.result_hash, original_exec_id=None, finished_at=outcome.finished_at,
        )  # fmt: skip
        try:
            entry = await anyio.to_thread.run_sync(self.store.finish, ctx.tenant_id, nonce, outcome, factory)
        except StoreUnavailableError as exc:
            # The handler ran but its outcome is not recorded: never say "denied" here. The claim
            # stays 'started', so the nonce answers in_progress, then outcome_unknown after restart.
            logger.error("outcome of %s not recorded: %s", fields["exec_id"], exc.message)
            lost = StoreUnavailableError(
                "the action ran but its outcome could not be recorded; do not assume it failed"
            )
            envelope = refusal_envelope(action.name, lost)
            envelope.update(status="failed", exec_id=fields["exec_id"])
            return Answer(envelope, lost)
        self._appended(entry)
        unsafe_fault_point("after_finish")
        error_json = error.to_dict() if error is not None else None
        return Answer(result_envelope(entry, action.name, outcome.status, result, error_json), error)

    async def _run_handler(self, action: Action, model: BaseModel) -> tuple[Outcome, Any, ExecutionError | None]:
        error: ExecutionError
        try:
            with anyio.fail_after(self.policy.limits["handler_timeout_seconds"]):
                if action.is_async:
                    output = await action.handler(model)
                else:
                    # A thread cannot be stopped: on timeout it is abandoned and may still finish.
                    output = await anyio.to_thread.run_sync(action.handler, model, abandon_on_cancel=True)
            result = output.model_dump(mode="json") if isinstance(output, BaseModel) else output
            # A result may nest deeper than its input (echo wraps it): allow twice the input depth.
            result_bytes = check_json_value(
                result, max_depth=2 * self.policy.limits["max_depth"], max_bytes=self.policy.limits["max_result_bytes"]
            )
        except MalformedInputError as exc:
            error = InvalidResultError(f"the handler returned an invalid result: {exc.message}")
        except TimeoutError:
            logger.warning("action %r timed out", action.name)
            limit = self.policy.limits["handler_timeout_seconds"]
            error = HandlerTimeoutError(f"the handler ran longer than {limit} s and was abandoned")
        except Exception as exc:
            logger.exception("action %r raised", action.name)
            error = HandlerError(f"the handler raised {type(exc).__name__}")
        else:
            finished_at = format_timestamp(self._clock())
            executed = Outcome("executed", result_bytes.decode(), sha256_hex(result_bytes), None, None, finished_at)
            return executed, result, None
        finished_at = format_timestamp(self._clock())
        return Outcome("failed", None, None, error.code, error.message, finished_at), None, error

    async def _answer_existing(self, record: NonceRecord, fields: Mapping[str, Any], action_hash: str) -> Answer:
        decision = decide_existing(record, action_hash)
        if not isinstance(decision, Replay):
            return await self._deny(decision, fields, AUTO_APPROVAL)
        original = decision.original
        # A replay of a failed call reports the original failure; it never re-runs the handler.
        original_error = (
            {"code": original.error_code, "message": original.error_message} if original.status == "failed" else None
        )
        finished_at = format_timestamp(self._clock())
        factory = self.receipts.factory(
            fields, status="replayed", error_code=original.error_code, approval=json.loads(original.approval),
            result_hash=original.result_hash, original_exec_id=original.exec_id, finished_at=finished_at,
        )  # fmt: skip
        entry = await anyio.to_thread.run_sync(self._append, factory, fields)
        self._appended(entry)
        result = json.loads(original.result) if original.result is not None else None
        return Answer(result_envelope(entry, str(fields["action"]), "replayed", result, original_error), None)

    async def _deny(
        self, error: OpenExecError, fields: Mapping[str, Any], approval: Mapping[str, Any],
        approval_request: Mapping[str, Any] | None = None,
    ) -> Answer:  # fmt: skip
        logger.info("denied %s: %s", fields["action"], error.code)
        factory = self.receipts.factory(
            fields, status="denied", error_code=error.code, approval=approval, result_hash=None,
            original_exec_id=None, finished_at=format_timestamp(self._clock()),
        )  # fmt: skip
        entry = await anyio.to_thread.run_sync(self._append, factory, fields)
        self._appended(entry)
        envelope = result_envelope(entry, str(fields["action"]), "denied", None, error.to_dict())
        envelope["approval_request"] = dict(approval_request) if approval_request else None
        return Answer(envelope, error)

    # -- receipts -------------------------------------------------------------------------------

    def _appended(self, entry: LedgerEntry) -> None:
        if self.on_append is not None:
            try:
                self.on_append(entry)
            except Exception:  # the receipt is committed: a failing observer must not fail the call
                logger.exception("on_append observer failed for seq %d", entry.seq)

    def _append(self, factory: ReceiptFactory, fields: Mapping[str, Any]) -> LedgerEntry:
        return self.store.append(
            factory, tenant_id=str(fields["tenant_id"]), run_id=str(fields["run_id"]), action=str(fields["action"])
        )

    async def run_handler(self, action: Action, model: BaseModel) -> tuple[Outcome, Any, ExecutionError | None]:
        """Run ``action``'s handler on a validated ``model`` with the gate's limits (step 5 alone).

        For ``ledger resolve --rerun`` (:mod:`openexec_mcp.ledger.resolve`), whose caller has already
        claimed the nonce; nothing is recorded here.

        Returns:
            ``(outcome, result, error)``: the outcome to record, the JSON result (``None`` when
            failed) and the :class:`ExecutionError` when failed (timeout, raised, invalid result).
        """
        return await self._run_handler(action, model)


_AUTO_APPROVAL_TEXT = canonicalize(dict(AUTO_APPROVAL)).decode()


def _approval_text(approval: Mapping[str, Any]) -> str:
    """JCS text of the receipt's approval object; the ``auto`` one is computed once at import."""
    return _AUTO_APPROVAL_TEXT if approval is AUTO_APPROVAL else canonicalize(dict(approval)).decode()
