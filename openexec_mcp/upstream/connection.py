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

"Sent" is observed, not guessed (:mod:`openexec_mcp.upstream.streams`); the per-call path is
:mod:`openexec_mcp.upstream.calls`, the outcome mapping :mod:`openexec_mcp.upstream.results`.
Resource subscriptions held at the upstream (pass-through) are :mod:`openexec_mcp.upstream.resources`.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, Literal

import anyio
import mcp_types as types
from mcp import Client
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from openexec_mcp._version import __version__
from openexec_mcp.errors import UpstreamUnavailableError
from openexec_mcp.upstream.calls import CallRouter
from openexec_mcp.upstream.config import UpstreamSettings
from openexec_mcp.upstream.resources import ResourceWatch
from openexec_mcp.upstream.results import describe
from openexec_mcp.upstream.streams import observed, transport_for

__all__ = ["BACKOFF_INITIAL_SECONDS", "BACKOFF_MAX_SECONDS", "ChangeKind", "State", "UpstreamConnection"]

logger = logging.getLogger("openexec_mcp.upstream")

State = Literal["starting", "ready", "down"]
ChangeKind = Literal["tools", "prompts", "resources", "state"]

BACKOFF_INITIAL_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
_LIST_PAGE_CAP = 100
_UPSTREAM_LOG_LEVEL: types.LoggingLevel = "info"


class UpstreamConnection:
    """A supervised connection to one ``[[upstreams]]`` server.

    Args:
        settings: The upstream's table.
        on_change: Called (awaited) with ``"tools"``, ``"prompts"``, ``"resources"`` when the upstream
            announced a list change (tools are re-listed first), and ``"state"`` on every state change.
        on_log: Upstream log messages that arrive while no call is in flight.
        on_resource_updated: Called (awaited) with the URI of each ``notifications/resources/updated``
            for a resource subscribed with :meth:`subscribe_resource`.
        backoff_initial_seconds: First reconnection delay (seconds).
        backoff_max_seconds: Largest reconnection delay (seconds).
    """

    def __init__(
        self,
        settings: UpstreamSettings,
        *,
        on_change: Callable[[UpstreamConnection, ChangeKind], Awaitable[None]] | None = None,
        on_log: Callable[[UpstreamConnection, types.LoggingMessageNotificationParams], Awaitable[None]] | None = None,
        on_resource_updated: Callable[[UpstreamConnection, str], Awaitable[None]] | None = None,
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
        self._on_resource_updated = on_resource_updated
        self._backoff_initial = backoff_initial_seconds
        self._backoff_max = backoff_max_seconds
        self._client: Client | None = None
        self._stopping = anyio.Event()
        self._stopped = anyio.Event()
        self._state_changed = anyio.Event()
        self._relist = anyio.Event()
        self._calls = CallRouter(self.name, self._log if on_log is not None else None)
        self._on_log = on_log
        self.resources = ResourceWatch(self.name, self._resource_updated)
        """The resource subscriptions held at this upstream."""

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
                            await self.resources.attach(client, tg, modern=self._modern(client))
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
                    logger.warning("upstream %r: connection failed or ended: %s", self.name, describe(exc))
                finally:
                    self._client = None
                    self.resources.detach()
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
            observed(transport_for(self.settings, stack), closed),
            mode="auto",
            cache=None,
            client_info=types.Implementation(name="openexec-mcp", version=__version__),
            elicitation_callback=self._calls.elicit,
            sampling_callback=self._calls.sample,
            logging_callback=self._calls.log,
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
            self.name,
            self.server_info["name"],
            self.server_info["version"],
            self.protocol_version,
            len(self.tools),
        )

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
                logger.warning("upstream %r: re-listing tools failed: %s", self.name, describe(exc))
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
            logger.info("upstream %r: no list-change subscription: %s", self.name, describe(exc))
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

    async def _log(self, params: types.LoggingMessageNotificationParams) -> None:
        if self._on_log is not None:
            await self._on_log(self, params)

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
        return await self._calls.forward(
            self.client, tool, arguments, meta=meta, call_timeout_seconds=self.settings.call_timeout_seconds
        )

    # -- resource subscriptions ------------------------------------------------------------------

    @property
    def supports_subscribe(self) -> bool:
        """Whether the upstream (as last connected) advertised ``resources.subscribe``."""
        resources = self.capabilities.resources if self.capabilities is not None else None
        return bool(resources is not None and resources.subscribe)

    async def _resource_updated(self, uri: str) -> None:
        if self._on_resource_updated is not None:
            try:
                await self._on_resource_updated(self, uri)
            except Exception:  # a listener's fault must not take the connection down
                logger.exception("upstream %r: resource listener failed", self.name)

    async def _message(self, message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self._relist.set()
        elif isinstance(message, types.PromptListChangedNotification):
            await self._notify("prompts")
        elif isinstance(message, types.ResourceListChangedNotification):
            await self._notify("resources")
        elif isinstance(message, types.ResourceUpdatedNotification):
            await self.resources.notified(str(message.params.uri))
        else:
            await anyio.lowlevel.checkpoint()
