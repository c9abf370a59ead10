"""One connection to one upstream MCP server, kept alive, with the SDK's own client (SPEC §11).

:class:`UpstreamConnection` runs a supervisor (:meth:`UpstreamConnection.run`) that connects with
``mcp.Client`` over stdio, streamable HTTP or legacy SSE, in whichever protocol era the upstream
speaks (``mode="auto"``: ``server/discover`` first, the ``initialize`` handshake as fallback),
lists the tools, and then waits for the connection to end. A crashed stdio upstream (or a lost
HTTP one) is reconnected with backoff: 1 s, doubling to 60 s, reset once a connection is ready.
States: ``starting`` (connecting), ``ready``, ``down`` (waiting for the next attempt; calls answer
``upstream_unavailable``).

:meth:`UpstreamConnection.call_tool` forwards one ``tools/call`` and maps what happened to the
outcomes of SPEC §11:

- an answer with ``isError: false`` → the result as JSON ``{content, structuredContent, isError}``;
- an answer with ``isError: true`` (or a JSON-RPC error from the upstream) → :class:`UpstreamError`;
- nothing left this process (not connected, connection refused) → :class:`UpstreamUnavailableError`;
- sent but no answer (timeout, crash, dropped connection, caller cancellation forwarded as
  ``notifications/cancelled``) → :class:`OutcomeUnknownError`.

"Sent" is observed, not guessed: the transport streams are wrapped so that the ``tools/call``
message reaching the transport marks the call's probe, and for HTTP a refused TCP connection marks
it as not sent.
"""

from __future__ import annotations

import logging
import math
import sys
import warnings
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from openexec_mcp._version import __version__
from openexec_mcp.errors import OutcomeUnknownError, UpstreamError, UpstreamUnavailableError
from openexec_mcp.upstream.config import UpstreamSettings
from openexec_mcp.upstream.hooks import CallHooks, current_hooks

__all__ = ["BACKOFF_INITIAL_SECONDS", "BACKOFF_MAX_SECONDS", "State", "UpstreamConnection", "result_json"]

logger = logging.getLogger("openexec_mcp.upstream")

State = Literal["starting", "ready", "down"]
ChangeKind = Literal["tools", "prompts", "resources", "state"]

BACKOFF_INITIAL_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
_LIST_PAGE_CAP = 100
_UPSTREAM_LOG_LEVEL: types.LoggingLevel = "info"


@dataclass
class _SendProbe:
    """What became of one forwarded call's request on its way out."""

    written: bool = False
    """The ``tools/call`` message was handed to the transport (it may have reached the upstream)."""
    connect_failed: bool = False
    """HTTP: the TCP connection was refused, so no byte of the request left."""


_PROBE: ContextVar[_SendProbe | None] = ContextVar("openexec_upstream_send_probe", default=None)


class UpstreamConnection:
    """A supervised connection to one ``[[upstreams]]`` server.

    Args:
        settings: The upstream's table.
        on_change: Called (awaited) with ``"tools"``, ``"prompts"``, ``"resources"`` when the upstream
            announced a list change (tools are re-listed first), and ``"state"`` on every state change.
        on_log: Upstream log messages that arrive while no call is in flight.
        backoff_initial_seconds: First reconnection delay (seconds).
        backoff_max_seconds: Largest reconnection delay (seconds).
    """

    def __init__(
        self,
        settings: UpstreamSettings,
        *,
        on_change: Callable[[UpstreamConnection, ChangeKind], Awaitable[None]] | None = None,
        on_log: Callable[[UpstreamConnection, types.LoggingMessageNotificationParams], Awaitable[None]] | None = None,
        backoff_initial_seconds: float = BACKOFF_INITIAL_SECONDS,
        backoff_max_seconds: float = BACKOFF_MAX_SECONDS,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.state: State = "starting"
        self.tools: tuple[types.Tool, ...] = ()
        self.server_info: dict[str, str | None] = {"name": None, "version": None}
        self.protocol_version: str | None = None
        self.capabilities: types.ServerCapabilities | None = None
        self.connects = 0
        """How many connections reached ``ready`` (1 + the restarts)."""
        self.next_delay_seconds = backoff_initial_seconds
        self._on_change = on_change
        self._on_log = on_log
        self._backoff_initial = backoff_initial_seconds
        self._backoff_max = backoff_max_seconds
        self._client: Client | None = None
        self._stopping = anyio.Event()
        self._stopped = anyio.Event()
        self._state_changed = anyio.Event()
        self._relist = anyio.Event()
        self._in_flight: list[CallHooks] = []

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect, keep connected, reconnect with backoff, until :meth:`stop`.

        ``task_status.started()`` fires after the first attempt, ready or not, so ``serve`` starts
        answering even when an upstream is down (its tools answer ``upstream_unavailable``).
        """
        started = False
        delay = self._backoff_initial
        try:
            while not self._stopping.is_set():
                await self._set_state("starting")
                reached_ready = False
                try:
                    # One scope around the whole connection (task groups must nest): its deadline
                    # bounds connecting and listing, and is lifted once the upstream is ready.
                    with anyio.CancelScope(
                        deadline=anyio.current_time() + self.settings.connect_timeout_seconds
                    ) as scope:
                        async with AsyncExitStack() as stack:
                            closed = anyio.Event()
                            client = await self._open(stack, closed)
                            tg = await stack.enter_async_context(anyio.create_task_group())  # exits before the client
                            stack.callback(tg.cancel_scope.cancel)
                            if self._modern(client):
                                # Subscribed before listing, so no change falls between the two.
                                await tg.start(self._listen, client)
                            await self._ready(client)
                            scope.deadline = math.inf
                            reached_ready = True
                            delay = self._backoff_initial
                            if not started:
                                started = True
                                task_status.started()
                            tg.start_soon(self._relister, client)
                            await self._wait_closed(closed)
                            tg.cancel_scope.cancel()
                    if scope.cancelled_caught:
                        logger.warning(
                            "upstream %r: no connection within %g s", self.name, self.settings.connect_timeout_seconds
                        )
                except Exception as exc:  # any failure of one connection ends it; the loop reconnects
                    logger.warning("upstream %r: connection failed or ended: %s", self.name, _describe(exc))
                finally:
                    self._client = None
                if self._stopping.is_set():
                    break
                if not reached_ready:
                    self.next_delay_seconds = delay
                await self._set_state("down")
                if not started:
                    started = True
                    task_status.started()
                logger.warning("upstream %r is down; next attempt in %.0f s", self.name, delay)
                with anyio.move_on_after(delay):
                    await self._stopping.wait()
                delay = min(delay * 2, self._backoff_max)
        finally:
            self._client = None
            self.state = "down"
            self._stopped.set()
            if not started:
                task_status.started()

    async def stop(self) -> None:
        """Ask the supervisor to disconnect (a stdio upstream is terminated) and wait for it."""
        self._stopping.set()
        await self._stopped.wait()

    async def wait_state(self, state: State) -> None:
        """Wait until the connection is in ``state`` (for tests and start-up)."""
        while self.state != state:
            event = self._state_changed
            await event.wait()

    async def _set_state(self, state: State) -> None:
        if self.state == state:
            return
        self.state = state
        event, self._state_changed = self._state_changed, anyio.Event()
        event.set()
        await self._notify("state")

    async def _notify(self, kind: ChangeKind) -> None:
        if self._on_change is not None:
            try:
                await self._on_change(self, kind)
            except Exception:  # a listener's fault must not take the connection down
                logger.exception("upstream %r: change listener failed", self.name)

    async def _open(self, stack: AsyncExitStack, closed: anyio.Event) -> Client:
        client = Client(
            _observed(self._transport(stack), closed),
            mode="auto",
            cache=None,
            client_info=types.Implementation(name="openexec-mcp", version=__version__),
            elicitation_callback=self._elicit,
            sampling_callback=self._sample,
            logging_callback=self._log,
            log_level=_UPSTREAM_LOG_LEVEL,
            message_handler=self._message,
        )
        await stack.enter_async_context(client)
        self.protocol_version = client.protocol_version
        self.capabilities = client.server_capabilities
        info = client.server_info
        self.server_info = {"name": info.name, "version": info.version} if info is not None else self.server_info
        if not self._modern(client) and self.capabilities.logging is not None:
            with warnings.catch_warnings():  # deprecated in 2026-07-28, still how 2025 servers log
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await client.set_logging_level(_UPSTREAM_LOG_LEVEL)  # pyright: ignore[reportDeprecated]
        return client

    async def _ready(self, client: Client) -> None:
        self.tools = await self._list_tools(client)
        self._client = client
        self.connects += 1
        await self._set_state("ready")
        await self._notify("tools")
        logger.info(
            "upstream %r ready: %s %s, protocol %s, %d tools",
            self.name, self.server_info["name"], self.server_info["version"], self.protocol_version, len(self.tools),
        )  # fmt: skip

    def _transport(self, stack: AsyncExitStack) -> Any:
        settings = self.settings
        if settings.kind == "stdio":
            assert settings.command is not None
            params = StdioServerParameters(
                command=settings.command,
                args=list(settings.args),
                env=dict(settings.env) or None,
                cwd=settings.cwd,
            )
            return stdio_client(params, errlog=sys.stderr)
        assert settings.url is not None
        headers = settings.resolved_headers()
        if settings.kind == "sse":

            def factory(
                headers: dict[str, str] | None = None,
                timeout: httpx2.Timeout | None = None,
                auth: httpx2.Auth | None = None,
            ) -> httpx2.AsyncClient:
                return httpx2.AsyncClient(
                    headers=headers, timeout=timeout or _http_timeout(), auth=auth, transport=_ProbeTransport()
                )

            return sse_client(settings.url, headers=headers, httpx_client_factory=factory)
        http_client = httpx2.AsyncClient(headers=headers, timeout=_http_timeout(), transport=_ProbeTransport())
        stack.push_async_callback(http_client.aclose)
        return streamable_http_client(settings.url, http_client=http_client)

    async def _wait_closed(self, closed: anyio.Event) -> None:
        """Return when the transport ended or :meth:`stop` was called."""
        async with anyio.create_task_group() as tg:

            async def stop_waiting() -> None:
                await self._stopping.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(stop_waiting)
            await closed.wait()
            tg.cancel_scope.cancel()

    async def _relister(self, client: Client) -> None:
        while True:
            await self._relist.wait()
            self._relist = anyio.Event()
            try:
                with anyio.fail_after(self.settings.connect_timeout_seconds):
                    self.tools = await self._list_tools(client)
            except (MCPError, TimeoutError, ValidationError) as exc:
                logger.warning("upstream %r: re-listing tools failed: %s", self.name, _describe(exc))
                continue
            await self._notify("tools")

    async def _listen(
        self, client: Client, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """2026-07-28 upstreams announce list changes on a ``subscriptions/listen`` stream.

        ``task_status.started()`` fires once the upstream acknowledged the subscription (or refused it).
        """
        capabilities = self.capabilities
        started = False
        try:
            async with client.listen(
                tools_list_changed=True,
                prompts_list_changed=bool(capabilities and capabilities.prompts),
                resources_list_changed=bool(capabilities and capabilities.resources),
            ) as subscription:
                started = True
                task_status.started()
                async for event in subscription:
                    kind = type(event).__name__
                    if kind == "ToolsListChanged":
                        self._relist.set()
                    elif kind == "PromptsListChanged":
                        await self._notify("prompts")
                    elif kind == "ResourcesListChanged":
                        await self._notify("resources")
        except Exception as exc:  # an upstream without listen support still works, without change events
            logger.info("upstream %r: no list-change subscription: %s", self.name, _describe(exc))
        finally:
            if not started:
                task_status.started()

    async def _list_tools(self, client: Client) -> tuple[types.Tool, ...]:
        tools: list[types.Tool] = []
        cursor: str | None = None
        for _ in range(_LIST_PAGE_CAP):
            page = await client.list_tools(cursor=cursor)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        return tuple(tools)

    @staticmethod
    def _modern(client: Client) -> bool:
        return client.protocol_version in MODERN_PROTOCOL_VERSIONS

    # -- calls -----------------------------------------------------------------------------------

    @property
    def client(self) -> Client:
        """The live client, for pass-through requests (resources, prompts).

        Raises:
            UpstreamUnavailableError: The upstream is not ready.
        """
        client = self._client
        if client is None or self.state != "ready":
            raise UpstreamUnavailableError(f"upstream {self.name!r} is {self.state}")
        return client

    async def call_tool(
        self, tool: str, arguments: dict[str, Any], *, meta: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Forward one ``tools/call`` and return the upstream result as JSON (SPEC §11).

        Args:
            tool: The upstream's own tool name (without the ``<name>.`` prefix).
            arguments: The validated arguments (without the reserved nonce, unless the tool
                declares its own ``nonce``).
            meta: ``_meta`` for the upstream request (the caller's reserved keys are not forwarded).

        Returns:
            ``{"content": [block, ...], "structuredContent": obj | None, "isError": False}``.

        Raises:
            UpstreamError: The upstream answered ``isError: true`` or a JSON-RPC error.
            UpstreamUnavailableError: Nothing was sent (not connected, connection refused).
            OutcomeUnknownError: Sent, and no answer: timeout, crash, dropped connection, or the
                caller cancelled (``notifications/cancelled`` was forwarded).
        """
        client = self.client
        hooks = current_hooks()
        probe = _SendProbe()
        token = _PROBE.set(probe)
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
                            read_timeout_seconds=self.settings.call_timeout_seconds,
                            progress_callback=hooks.progress,
                            meta=meta,  # pyright: ignore[reportArgumentType]
                        )
                    except Exception as exc:  # classified below, with what the probe saw
                        failure = exc
                tg.cancel_scope.cancel()
        finally:
            _PROBE.reset(token)
            self._in_flight.remove(hooks)
        if result is not None:
            body = result_json(result)
            if result.is_error:
                raise UpstreamError(f"upstream {self.name!r} tool {tool!r} answered isError", result=body)
            return body
        if cancelled_by_caller:
            if probe.written:
                raise OutcomeUnknownError(f"the call to upstream {self.name!r} was cancelled after it was sent")
            raise UpstreamUnavailableError(f"the call to upstream {self.name!r} was cancelled before it was sent")
        raise self._classify(tool, failure, probe)

    def _classify(self, tool: str, failure: BaseException | None, probe: _SendProbe) -> Exception:
        where = f"upstream {self.name!r} tool {tool!r}"
        if probe.connect_failed or not probe.written:
            return UpstreamUnavailableError(f"{where}: the upstream is not reachable; nothing was sent")
        if isinstance(failure, MCPError):
            code = failure.error.code
            if code == types.REQUEST_TIMEOUT:
                return OutcomeUnknownError(f"{where}: no answer within {self.settings.call_timeout_seconds:g} s")
            if code == types.CONNECTION_CLOSED:
                return OutcomeUnknownError(f"{where}: the connection ended before the answer")
            if code == types.INTERNAL_ERROR and failure.error.message == "Server returned an error response":
                # An HTTP 5xx the SDK turned into an error: the upstream may or may not have run it.
                return OutcomeUnknownError(f"{where}: the upstream answered HTTP 5xx")
            text = f"upstream JSON-RPC error {code}: {failure.error.message}"
            return UpstreamError(f"{where} answered a JSON-RPC error {code}", result=_error_result(text))
        if isinstance(failure, ValidationError | RuntimeError):
            # The upstream answered, but not with a result we can pass on (shape, outputSchema).
            return UpstreamError(f"{where} answered an invalid result", result=_error_result("invalid upstream result"))
        return OutcomeUnknownError(f"{where}: {_describe(failure)} after the request was sent")

    # -- what the upstream sends back ------------------------------------------------------------

    def _current_call(self) -> CallHooks | None:
        # Server-to-client requests carry no link to the call that caused them (stdio, 2025 era):
        # they go to the most recent call in flight.
        return self._in_flight[-1] if self._in_flight else None

    async def _elicit(self, context: Any, params: types.ElicitRequestParams) -> types.ElicitResult | types.ErrorData:
        hooks = self._current_call()
        if hooks is None or hooks.elicit is None:
            return types.ElicitResult(action="decline")
        return await hooks.elicit(params)

    async def _sample(
        self, context: Any, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.CreateMessageResultWithTools | types.ErrorData:
        hooks = self._current_call()
        if hooks is None or hooks.sample is None:
            return types.ErrorData(code=types.INVALID_REQUEST, message="sampling is not available through openexec-mcp")
        return await hooks.sample(params)

    async def _log(self, params: types.LoggingMessageNotificationParams) -> None:
        hooks = self._current_call()
        if hooks is not None and hooks.log is not None:
            await hooks.log(params)
        elif self._on_log is not None:
            await self._on_log(self, params)

    async def _message(self, message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self._relist.set()
        elif isinstance(message, types.PromptListChangedNotification):
            await self._notify("prompts")
        elif isinstance(message, types.ResourceListChangedNotification):
            await self._notify("resources")
        else:
            await anyio.lowlevel.checkpoint()


def result_json(result: types.CallToolResult) -> dict[str, Any]:
    """Return the JSON form of an upstream result that the gate hashes (SPEC §11).

    Returns:
        ``{"content": [block as MCP JSON, ...], "structuredContent": obj | None, "isError": bool}``.
    """
    return {
        "content": [block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in result.content],
        "structuredContent": result.structured_content,
        "isError": bool(result.is_error),
    }


def _error_result(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "structuredContent": None, "isError": True}


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no answer"
    if isinstance(exc, MCPError):
        return f"MCP error {exc.error.code}: {exc.error.message}"
    if isinstance(exc, BaseExceptionGroup):
        inner: tuple[BaseException, ...] = exc.exceptions  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        return "; ".join(_describe(one) for one in inner)
    return f"{type(exc).__name__}: {exc}"


def _http_timeout() -> httpx2.Timeout:
    # The per-call deadline is call_timeout_seconds (the SDK's request clock); the read timeout
    # only has to outlive a long-open SSE stream.
    return httpx2.Timeout(30.0, read=300.0)


class _ProbeTransport(httpx2.AsyncBaseTransport):
    """An HTTP transport that marks the current call's probe when the connection is refused."""

    def __init__(self) -> None:
        self._inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            return await self._inner.handle_async_request(request)
        except httpx2.ConnectError:
            probe = _PROBE.get()
            if probe is not None:
                probe.connect_failed = True
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()


@asynccontextmanager
async def _observed(transport: Any, closed: anyio.Event) -> AsyncGenerator[tuple[Any, Any]]:
    """Wrap a transport's streams: set ``closed`` when the read side ends; mark written calls."""
    try:
        async with transport as (read_stream, write_stream):
            yield _ObservedRead(read_stream, closed), _ObservedWrite(write_stream)
    finally:
        closed.set()


class _ObservedRead:
    def __init__(self, inner: Any, closed: anyio.Event) -> None:
        self._inner = inner
        self._closed = closed

    async def __aenter__(self) -> _ObservedRead:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            return await self._inner.__aexit__(*exc_info)
        finally:
            self._closed.set()

    def __aiter__(self) -> _ObservedRead:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._closed.set()
            raise StopAsyncIteration from None

    async def receive(self) -> Any:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._closed.set()
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _ObservedWrite:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def __aenter__(self) -> _ObservedWrite:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await self._inner.__aexit__(*exc_info)

    async def send(self, item: Any) -> None:
        probe = _PROBE.get()
        message = getattr(item, "message", None)
        if probe is not None and isinstance(message, types.JSONRPCRequest) and message.method == "tools/call":
            # Marked before the write: a write interrupted half-way may still have delivered.
            probe.written = True
        try:
            await self._inner.send(item)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            if probe is not None:
                probe.written = False  # a closed stream took nothing
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
