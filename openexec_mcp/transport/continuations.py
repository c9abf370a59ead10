"""Parked upstream calls: the 2026-07-28 ``input_required`` round of an upstream's question (SPEC §11).

A 2026-07-28 caller has no server-to-client channel, so when a guarded upstream asks for input
in the middle of a call (``elicitation/create``, or ``sampling/createMessage``) the call is
*parked*:

1. The transport starts the gate call as a background task (:meth:`ParkedCalls.start`, in the
   upstreams' task group: it outlives the request) and waits for its first event.
2. The upstream's question reaches the call's hooks; the hook posts it and waits (at most
   ``min(mcp.request_state_ttl_seconds, the upstream's call_timeout_seconds)``) for the answer.
   The waiting request answers ``input_required`` with the upstream's request unchanged under
   :data:`INPUT_KEY`, and ``requestState`` = ``upstream:<call id>:<round>`` (the call id is 128
   random bits; the SDK seals the state, bound to this tool and these arguments). An approval
   confirmation's state is an action_hash, so the two never mix.
3. The caller's retry (same tool, arguments, ``_meta``) is a continuation, not a new call: it
   never reaches the nonce claim again. :meth:`ParkedCalls.resume` checks it is the same tenant,
   tool, arguments and ``_meta`` nonce, hands the answer to the upstream, rebinds progress and log
   messages to the retry, and waits for the next event: the gate's answer (with its receipt) or the
   upstream's next question (another round).
4. A round nobody answers in time (or asked after the caller cancelled the waiting request) is
   answered ``cancel`` (elicitation) or a JSON-RPC error (sampling) to the upstream, which then
   finishes the call as it decides; the receipt is written as usual and the round is forgotten.
   A retry of a forgotten or unknown round (expired, answered already, or parked in another
   process) is refused with ``input_round_expired``; nothing runs.

Parked calls live in this process only: behind several replicas the retry must reach the same one
(sticky routing) or it gets ``input_round_expired``.
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import mcp_types as types

from openexec_mcp.core.canonical import canonicalize, sha256_hex
from openexec_mcp.errors import InputRoundExpiredError, InternalError
from openexec_mcp.gate.envelope import refusal_envelope
from openexec_mcp.gate.pipeline import Answer, GateAnswer
from openexec_mcp.upstream.hooks import CallHooks, use_hooks

__all__ = ["INPUT_KEY", "STATE_PREFIX", "Binding", "ParkedCall", "ParkedCalls", "binding_of"]

logger = logging.getLogger("openexec_mcp.transport.continuations")

STATE_PREFIX = "upstream:"
"""Start of the plaintext ``requestState`` of an upstream's round: ``upstream:<call id>:<round>``."""

INPUT_KEY = "dev.openexec/upstream"
"""The ``input_requests`` key of an upstream's question (2026-07-28)."""

Spawn = Callable[[Callable[[], Coroutine[Any, Any, None]]], bool]
"""Runs a task beyond the current request; ``False`` when it cannot (no upstreams running)."""

Question = types.ElicitRequest | types.CreateMessageRequest
Reply = types.ElicitResult | types.CreateMessageResult | types.CreateMessageResultWithTools | types.ErrorData


@dataclass(frozen=True)
class Binding:
    """What a retry must repeat to continue a parked call: tenant, tool, arguments, ``_meta`` nonce."""

    tenant_id: str
    tool: str
    arguments_digest: str
    meta_nonce: Any


def binding_of(tenant_id: str, tool: str, arguments: Mapping[str, Any] | None, meta_nonce: Any) -> Binding:
    """Return the binding of a ``tools/call``; the arguments as the SHA-256 of their canonical JSON."""
    try:
        digest = sha256_hex(canonicalize(dict(arguments or {})))
    except Exception:  # not JSON a first call could have had: binds nothing
        digest = "unbindable:" + secrets.token_hex(16)
    return Binding(tenant_id, tool, digest, meta_nonce)


@dataclass
class _Round:
    """One question of the upstream, answered once (by the caller's retry, or by the deadline)."""

    number: int
    request: Question
    reply: Reply | None = None
    settled: bool = False
    done: anyio.Event = field(default_factory=anyio.Event)

    def settle(self, reply: Reply | None) -> bool:
        """Answer the round; ``False`` if it was answered already (the first answer wins)."""
        if self.settled:
            return False
        self.reply, self.settled = reply, True
        self.done.set()
        return True


class ParkedCall:
    """One upstream call of a 2026-07-28 caller, running in the background across its rounds.

    Attributes:
        call_id: 32 hex characters (128 random bits), named by the round's ``requestState``.
        binding: What every retry must repeat.
        hooks: The hooks the upstream call sees; progress and log messages go to the request
            currently waiting (:meth:`follow`), questions become rounds.
    """

    def __init__(
        self,
        calls: ParkedCalls,
        binding: Binding,
        *,
        round_seconds: float,
        elicit: bool,
        sample: bool,
    ) -> None:
        self.call_id = secrets.token_hex(16)
        self.binding = binding
        self._calls = calls
        self._round_seconds = round_seconds
        self._rounds = 0
        self._target = CallHooks()
        self._open: _Round | None = None
        self._abandoned = False
        self._events: deque[_Round | GateAnswer] = deque()
        self._arrived = anyio.Event()
        self.hooks = CallHooks(progress=self._progress, log=self._log)
        if elicit:
            self.hooks.elicit = self._elicit
        if sample:
            self.hooks.sample = self._sample

    def follow(self, hooks: CallHooks) -> None:
        """Send progress and log messages to the request of ``hooks`` from now on."""
        self._target = hooks

    async def next_answer(self) -> GateAnswer | types.InputRequiredResult:
        """Wait for the gate's answer, or the upstream's next question as an ``input_required`` result.

        A cancellation of the waiting request is forwarded to the upstream call (``hooks.cancelled``),
        which the gate then records ``indeterminate`` if the upstream had it.
        """
        try:
            while not self._events:
                await self._arrived.wait()
                self._arrived = anyio.Event()
        except anyio.get_cancelled_exc_class():
            self.hooks.cancelled.set()
            raise
        event = self._events.popleft()
        if not isinstance(event, _Round):
            return event
        self._open = event
        self._target = CallHooks()  # this request ends here; until a retry waits, nobody gets progress
        return self._input_required(event)

    def answer(self, round_number: int, responses: Mapping[str, Any] | None) -> types.InputRequiredResult | None:
        """Hand the retry's answer to the open round ``round_number``.

        Returns:
            ``None`` when the answer was handed over (wait with :meth:`next_answer`), or the same
            ``input_required`` result again when the retry carried no answer under :data:`INPUT_KEY`.

        Raises:
            InputRoundExpiredError: ``round_number`` is not the open round (answered or expired).
        """
        current = self._open
        if current is None or current.number != round_number or current.settled:
            raise InputRoundExpiredError("this input round is no longer open (answered already or expired)")
        response = (responses or {}).get(INPUT_KEY)
        if response is None:
            return self._input_required(current)
        self._open = None
        current.settle(_reply_for(current.request, response))
        return None

    def _input_required(self, current: _Round) -> types.InputRequiredResult:
        state = f"{STATE_PREFIX}{self.call_id}:{current.number}"
        return types.InputRequiredResult(input_requests={INPUT_KEY: current.request}, request_state=state)

    async def run(self, call: Callable[[], Awaitable[GateAnswer]], tool: str) -> None:
        """Run the gate call to its end (shielded: a claimed call reaches its receipt); post its answer."""
        try:
            answer = await self._guarded(call, tool)
        finally:
            self._calls.forget(self)
        self._post(answer)

    async def _guarded(self, call: Callable[[], Awaitable[GateAnswer]], tool: str) -> GateAnswer:
        answered: GateAnswer | None = None
        try:
            with anyio.CancelScope(shield=True), use_hooks(self.hooks):
                answered = await call()
        except Exception:  # Gate.call never raises; this keeps the upstreams' task group alive
            logger.exception("a parked upstream call raised")
        if answered is None:
            failure = InternalError("internal error")
            return Answer(refusal_envelope(tool, failure), failure)
        return answered

    def _post(self, event: _Round | GateAnswer) -> None:
        self._events.append(event)
        self._arrived.set()

    async def _ask(self, request: Question) -> Reply | None:
        if self._abandoned or self.hooks.cancelled.is_set():  # nobody is there to ask any more
            return None
        self._rounds += 1
        current = _Round(self._rounds, request)
        self._post(current)
        try:
            with anyio.move_on_after(self._round_seconds):
                async with anyio.create_task_group() as waiting:

                    async def caller_cancelled() -> None:
                        await self.hooks.cancelled.wait()
                        waiting.cancel_scope.cancel()

                    waiting.start_soon(caller_cancelled)
                    await current.done.wait()
                    waiting.cancel_scope.cancel()
        finally:
            if current.settle(None):  # nobody answered in time, the caller cancelled, or the upstream went away
                logger.info("an upstream input round was not answered in time; the upstream gets cancel")
                self._open, self._abandoned = None, True
                self._calls.forget(self)
        return current.reply

    async def _elicit(self, params: types.ElicitRequestParams) -> types.ElicitResult | types.ErrorData:
        reply = await self._ask(types.ElicitRequest(params=params))
        if isinstance(reply, types.ElicitResult | types.ErrorData):
            return reply
        return types.ElicitResult(action="cancel")

    async def _sample(
        self, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.CreateMessageResultWithTools | types.ErrorData:
        reply = await self._ask(types.CreateMessageRequest(params=params))
        if isinstance(reply, types.CreateMessageResult | types.CreateMessageResultWithTools | types.ErrorData):
            return reply
        return types.ErrorData(code=types.INTERNAL_ERROR, message="the client did not answer the sampling request")

    async def _progress(self, progress: float, total: float | None, message: str | None) -> None:
        if self._target.progress is not None:
            await self._target.progress(progress, total, message)

    async def _log(self, params: types.LoggingMessageNotificationParams) -> None:
        if self._target.log is not None:
            await self._target.log(params)


def _reply_for(request: Question, response: Any) -> Reply:
    """Return the caller's response as the upstream's answer; a response of the wrong kind declines."""
    if isinstance(request, types.ElicitRequest):
        return response if isinstance(response, types.ElicitResult) else types.ElicitResult(action="decline")
    if isinstance(response, types.CreateMessageResult | types.CreateMessageResultWithTools):
        return response
    return types.ErrorData(code=types.INVALID_REQUEST, message="the client's answer was not a sampling result")


class ParkedCalls:
    """The parked upstream calls of this process, by call id.

    Args:
        spawn: Runs a parked call's background task (the upstreams' task group).
        ttl_seconds: ``mcp.request_state_ttl_seconds``: the longest a round waits for its retry.
    """

    def __init__(self, spawn: Spawn, ttl_seconds: float) -> None:
        self._spawn = spawn
        self._ttl_seconds = ttl_seconds
        self._calls: dict[str, ParkedCall] = {}

    def start(
        self,
        call: Callable[[], Awaitable[GateAnswer]],
        binding: Binding,
        *,
        call_timeout_seconds: float,
        elicit: bool,
        sample: bool,
    ) -> ParkedCall | None:
        """Start ``call`` (the gate call) in the background; ``None`` if it cannot run there.

        Args:
            call: Runs the gate call; the upstream's questions reach the returned call's hooks.
            binding: What every retry must repeat.
            call_timeout_seconds: The upstream's ``call_timeout_seconds`` (bounds a round too).
            elicit: The caller can answer elicitation rounds.
            sample: The caller can answer sampling rounds.
        """
        parked = ParkedCall(
            self,
            binding,
            round_seconds=min(self._ttl_seconds, call_timeout_seconds),
            elicit=elicit,
            sample=sample,
        )

        async def run() -> None:
            await parked.run(call, binding.tool)

        self._calls[parked.call_id] = parked
        if not self._spawn(run):
            del self._calls[parked.call_id]
            return None
        return parked

    def resume(self, request_state: str, binding: Binding) -> tuple[ParkedCall, int]:
        """Return the parked call and round a retry's ``requestState`` names.

        Raises:
            InputRoundExpiredError: No such call in this process (expired, finished, another
                replica, a restart), a malformed state, or a retry that is not the same call
                (another tenant, tool, arguments or ``_meta`` nonce).
        """
        _, _, rest = request_state.partition(STATE_PREFIX)
        call_id, _, number = rest.partition(":")
        parked = self._calls.get(call_id)
        if parked is None or not number.isdigit():
            raise InputRoundExpiredError(
                "this input round is unknown here (expired, or held by another server process); "
                "call again with the same nonce for the recorded outcome"
            )
        if parked.binding != binding:
            raise InputRoundExpiredError("this input round belongs to another call")
        return parked, int(number)

    def forget(self, parked: ParkedCall) -> None:
        """Drop ``parked``: later retries of its rounds are refused."""
        if self._calls.get(parked.call_id) is parked:
            del self._calls[parked.call_id]
