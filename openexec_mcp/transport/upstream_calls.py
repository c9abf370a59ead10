"""The MCP transport's way of gating a call to a guarded upstream tool (SPEC §11).

Every upstream call runs with its pass-through hooks (:func:`~openexec_mcp.upstream.relay.hooks_for_request`).
A handshake-era caller, or one that cannot answer questions, is served inline: the gate call runs
in the request, an upstream question is relayed as a server-to-client request (handshake era)
or declined. A 2026-07-28 caller that declared elicitation or sampling gets the upstream's
questions as ``input_required`` rounds: the call is parked
(:mod:`openexec_mcp.transport.continuations`) and its retries continue it.
"""

from __future__ import annotations

from typing import Any

import anyio
from mcp_types import CallToolRequestParams, InputRequiredResult
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from openexec_mcp.errors import InputRoundExpiredError
from openexec_mcp.gate.envelope import refusal_envelope
from openexec_mcp.gate.pipeline import Answer, CallContext, Gate, GateAnswer
from openexec_mcp.registry import Action
from openexec_mcp.transport.continuations import STATE_PREFIX, ParkedCalls, binding_of
from openexec_mcp.upstream.actions import UpstreamAction
from openexec_mcp.upstream.hooks import CallHooks, use_hooks
from openexec_mcp.upstream.relay import hooks_for_request

__all__ = ["UpstreamCalls", "is_continuation"]


def is_continuation(params: CallToolRequestParams) -> bool:
    """Return whether the ``tools/call`` is the retry of an upstream's ``input_required`` round."""
    state = params.request_state
    return state is not None and state.startswith(STATE_PREFIX)


class UpstreamCalls:
    """Gates calls to upstream tools, parking those whose upstream may ask a 2026-07-28 caller.

    Args:
        gate: The gate.
        parked: The parked calls of this process; ``None`` (no upstreams running): every call
            is served inline and a continuation is refused ``input_round_expired``.
    """

    def __init__(self, gate: Gate, parked: ParkedCalls | None) -> None:
        self._gate = gate
        self._parked = parked

    async def call(
        self, action: Action | None, params: CallToolRequestParams, ctx: Any, call_ctx: CallContext
    ) -> GateAnswer | InputRequiredResult:
        """Gate the call, or continue the parked call its ``requestState`` names.

        Returns:
            The gate's answer; or ``input_required`` with the upstream's question (2026-07-28);
            or ``denied`` / ``input_round_expired`` (no receipt) for a continuation of no open
            round. Never raises for anything a caller sends.
        """
        if is_continuation(params):
            return await self._resume(str(params.request_state), params, ctx, call_ctx)
        hooks = hooks_for_request(ctx)
        capabilities = ctx.session.client_capabilities
        modern = getattr(ctx, "protocol_version", None) in MODERN_PROTOCOL_VERSIONS
        elicit = modern and capabilities is not None and capabilities.elicitation is not None
        sample = modern and capabilities is not None and capabilities.sampling is not None
        if self._parked is not None and isinstance(action, UpstreamAction) and (elicit or sample):
            gate, arguments = self._gate, params.arguments or {}

            async def call() -> GateAnswer:
                return await gate.call(params.name, arguments, call_ctx)

            parked = self._parked.start(
                call,
                binding_of(call_ctx.tenant_id, params.name, params.arguments, call_ctx.meta_nonce),
                call_timeout_seconds=action.connection.settings.call_timeout_seconds,
                elicit=elicit,
                sample=sample,
            )
            if parked is not None:
                parked.follow(hooks)
                return await parked.next_answer()
        return await _call_with_hooks(self._gate, params, hooks, call_ctx)

    async def _resume(
        self, state: str, params: CallToolRequestParams, ctx: Any, call_ctx: CallContext
    ) -> GateAnswer | InputRequiredResult:
        """Hand the retry's answer to its parked call and wait for the call's next event.

        The retry is a continuation of a claimed call: it never reaches the gate (no second nonce
        claim, no second execution).
        """
        binding = binding_of(call_ctx.tenant_id, params.name, params.arguments, call_ctx.meta_nonce)
        try:
            if self._parked is None:
                raise InputRoundExpiredError("this input round is unknown here (no upstream call is parked)")
            parked, number = self._parked.resume(state, binding)
            again = parked.answer(number, params.input_responses)
        except InputRoundExpiredError as exc:
            return Answer(refusal_envelope(params.name, exc), exc)
        if again is not None:
            return again
        parked.follow(hooks_for_request(ctx))
        return await parked.next_answer()


async def _call_with_hooks(
    gate: Gate, params: CallToolRequestParams, hooks: CallHooks, call_ctx: CallContext
) -> GateAnswer:
    """Gate an upstream call in the request, with its pass-through hooks (SPEC §11).

    The gate shields a claimed call from cancellation, so the caller's cancellation is handed to
    the upstream call through ``hooks.cancelled``: it forwards ``notifications/cancelled`` and the
    call is recorded ``indeterminate`` before the cancellation goes on.
    """
    answered: list[GateAnswer] = []
    done = anyio.Event()

    async def run() -> None:
        with anyio.CancelScope(shield=True), use_hooks(hooks):
            answered.append(await gate.call(params.name, params.arguments or {}, call_ctx))
        done.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(run)
        try:
            await done.wait()
        except anyio.get_cancelled_exc_class():
            hooks.cancelled.set()
            raise
    return answered[0]
