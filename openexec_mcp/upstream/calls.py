"""The per-call path of one upstream connection: forward ``tools/call``, route what comes back (SPEC §11).

:class:`CallRouter` keeps the calls in flight on one connection. :meth:`CallRouter.forward` sends
one ``tools/call`` with a :class:`~openexec_mcp.upstream.streams.SendProbe` set, forwards the
caller's cancellation as ``notifications/cancelled``, and maps the outcome (see
:func:`~openexec_mcp.upstream.results.classify`). The upstream's elicitation and sampling
requests and log messages during a call go to that call's
:class:`~openexec_mcp.upstream.hooks.CallHooks`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import mcp_types as types
from mcp import Client

from openexec_mcp.errors import OutcomeUnknownError, UpstreamError, UpstreamUnavailableError
from openexec_mcp.upstream.hooks import CallHooks, current_hooks
from openexec_mcp.upstream.results import classify, result_json
from openexec_mcp.upstream.streams import SEND_PROBE, SendProbe

__all__ = ["CallRouter"]

LogListener = Callable[[types.LoggingMessageNotificationParams], Awaitable[None]]


class CallRouter:
    """The calls in flight on one upstream connection.

    Args:
        name: The upstream's name (for messages).
        on_log: Upstream log messages that arrive while no call is in flight.
    """

    def __init__(self, name: str, on_log: LogListener | None = None) -> None:
        self._name = name
        self._on_log = on_log
        self._in_flight: list[CallHooks] = []

    async def forward(
        self,
        client: Client,
        tool: str,
        arguments: dict[str, Any],
        *,
        meta: dict[str, Any] | None,
        call_timeout_seconds: float,
    ) -> dict[str, Any]:
        """Forward one ``tools/call`` on ``client``; see ``UpstreamConnection.call_tool`` (SPEC §11).

        Returns:
            ``{"content": [block, ...], "structuredContent": obj | None, "isError": False}``.

        Raises:
            UpstreamError: The upstream answered ``isError: true`` or a JSON-RPC error.
            UpstreamUnavailableError: Nothing was sent.
            OutcomeUnknownError: Sent, and no answer (timeout, crash, drop, caller cancellation).
        """
        hooks = current_hooks()
        probe = SendProbe()
        token = SEND_PROBE.set(probe)
        self._in_flight.append(hooks)
        cancelled_by_caller = False
        result: types.CallToolResult | None = None
        failure: BaseException | None = None
        try:
            async with anyio.create_task_group() as tg:
                with anyio.CancelScope() as call_scope:

                    async def watch_cancellation() -> None:
                        nonlocal cancelled_by_caller
                        await hooks.cancelled.wait()
                        cancelled_by_caller = True
                        call_scope.cancel()  # the SDK sends notifications/cancelled for a written request

                    tg.start_soon(watch_cancellation)
                    try:
                        result = await client.call_tool(
                            tool,
                            arguments,
                            read_timeout_seconds=call_timeout_seconds,
                            progress_callback=hooks.progress,
                            meta=meta,  # pyright: ignore[reportArgumentType]
                        )
                    except Exception as exc:  # classified below, with what the probe saw
                        failure = exc
                tg.cancel_scope.cancel()
        finally:
            SEND_PROBE.reset(token)
            self._in_flight.remove(hooks)
        if result is not None:
            body = result_json(result)
            if result.is_error:
                raise UpstreamError(f"upstream {self._name!r} tool {tool!r} answered isError", result=body)
            return body
        if cancelled_by_caller:
            if probe.written:
                raise OutcomeUnknownError(f"the call to upstream {self._name!r} was cancelled after it was sent")
            raise UpstreamUnavailableError(f"the call to upstream {self._name!r} was cancelled before it was sent")
        raise classify(f"upstream {self._name!r} tool {tool!r}", failure, probe, call_timeout_seconds)

    def _current_call(self) -> CallHooks | None:
        # Server-to-client requests carry no link to the call that caused them (stdio, 2025 era):
        # they go to the most recent call in flight.
        return self._in_flight[-1] if self._in_flight else None

    async def elicit(self, context: Any, params: types.ElicitRequestParams) -> types.ElicitResult | types.ErrorData:
        """Answer an upstream elicitation (SDK callback): the current call's hook, else ``decline``."""
        hooks = self._current_call()
        if hooks is None or hooks.elicit is None:
            return types.ElicitResult(action="decline")
        return await hooks.elicit(params)

    async def sample(
        self, context: Any, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.CreateMessageResultWithTools | types.ErrorData:
        """Answer an upstream sampling request (SDK callback): the current call's hook, else an error."""
        hooks = self._current_call()
        if hooks is None or hooks.sample is None:
            return types.ErrorData(code=types.INVALID_REQUEST, message="sampling is not available through openexec-mcp")
        return await hooks.sample(params)

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        """Route an upstream log message (SDK callback): the current call's hook, else ``on_log``."""
        hooks = self._current_call()
        if hooks is not None and hooks.log is not None:
            await hooks.log(params)
        elif self._on_log is not None:
            await self._on_log(params)
