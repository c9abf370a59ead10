"""What flows back to the caller while an upstream call runs (SPEC §11, "pass-through").

The gate calls an upstream tool's handler with the parsed arguments only; everything else the
caller's transport knows about the call travels here, in a context variable that the MCP transport
sets around ``gate.call`` (context variables follow the call into the handler, which the gate
awaits in the same task or a child of it). The upstream connection reads a hook each time it
uses it, except ``progress``, which it binds when it sends the request; a parked call's hooks
therefore forward to whichever request is waiting at the time:

- ``progress``: upstream ``notifications/progress`` for this call, to the caller's
  ``progressToken`` (``None``: the caller asked for no progress).
- ``log``: upstream ``notifications/message``, for a caller that set a level.
- ``elicit`` / ``sample``: upstream elicitation and sampling requests, relayed to a handshake-era
  caller that supports them, or turned into ``input_required`` rounds for a 2026-07-28 caller that
  supports them (the transport's parked calls); ``None`` declines (elicitation answers
  ``decline``, sampling a JSON-RPC error).
- ``cancelled``: set by the transport when the caller cancels the request. The gate shields the
  handler from cancellation (a claimed call must reach its receipt), so the handler watches this
  event, forwards ``notifications/cancelled`` upstream, and raises ``OutcomeUnknownError``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import anyio
import mcp_types as types
from mcp.shared.dispatcher import ProgressFnT

__all__ = ["CallHooks", "current_hooks", "use_hooks"]

ProgressHook = ProgressFnT
LogHook = Callable[[types.LoggingMessageNotificationParams], Awaitable[None]]
ElicitHook = Callable[[types.ElicitRequestParams], Awaitable[types.ElicitResult | types.ErrorData]]
SampleHook = Callable[
    [types.CreateMessageRequestParams],
    Awaitable[types.CreateMessageResult | types.CreateMessageResultWithTools | types.ErrorData],
]


@dataclass
class CallHooks:
    """The caller-side callbacks of one guarded call (all optional).

    Attributes:
        progress: ``(progress, total, message)`` for the caller's ``progressToken``.
        log: One upstream log message.
        elicit: Relay one elicitation request; ``None`` declines.
        sample: Relay one sampling request; ``None`` refuses.
        cancelled: Set when the caller cancelled the request.
    """

    progress: ProgressHook | None = None
    log: LogHook | None = None
    elicit: ElicitHook | None = None
    sample: SampleHook | None = None
    cancelled: anyio.Event = field(default_factory=anyio.Event)


_HOOKS: ContextVar[CallHooks | None] = ContextVar("openexec_upstream_call_hooks", default=None)


def current_hooks() -> CallHooks:
    """Return the hooks of the call being handled (empty hooks outside of one)."""
    hooks = _HOOKS.get()
    return hooks if hooks is not None else CallHooks()


@contextmanager
def use_hooks(hooks: CallHooks) -> Generator[CallHooks]:
    """Make ``hooks`` the current call's hooks for the ``with`` block (the transport's side)."""
    token = _HOOKS.set(hooks)
    try:
        yield hooks
    finally:
        _HOOKS.reset(token)
