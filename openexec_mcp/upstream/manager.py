"""All the upstreams of one server: start, supervise, publish their tools, stop (SPEC §11).

:class:`UpstreamManager` owns one :class:`UpstreamConnection` per ``[[upstreams]]`` table. While
:meth:`UpstreamManager.running` is entered, every connection's supervisor runs; each time an
upstream's tool list changes (connected, ``tools/list_changed``) the manager calls
``publish(source, actions)`` with the source name ``upstream:<name>`` and the new
:class:`UpstreamAction` list, which the runtime wires to ``catalog.replace_source``. While an
upstream is down its tools stay listed and answer ``upstream_unavailable``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import mcp_types as types

from openexec_mcp.errors import ConfigError
from openexec_mcp.upstream.actions import UpstreamAction, actions_for
from openexec_mcp.upstream.config import UpstreamSettings
from openexec_mcp.upstream.connection import ChangeKind, UpstreamConnection

__all__ = ["UpstreamManager"]

logger = logging.getLogger("openexec_mcp.upstream")

Publish = Callable[[str, list[UpstreamAction]], Awaitable[None] | None]
ListChanged = Callable[[str, ChangeKind], Awaitable[None]]
ResourceListener = Callable[[UpstreamConnection, str], Awaitable[None]]
LogListener = Callable[[str, types.LoggingMessageNotificationParams], Awaitable[None]]


class UpstreamManager:
    """The upstream connections of one server process.

    Args:
        upstreams: The ``[[upstreams]]`` tables.
        publish: Receives ``("upstream:<name>", actions)`` whenever an upstream's tools change.
        on_list_changed: Receives ``(upstream name, "prompts" | "resources")`` list changes to
            forward to clients (tools are published instead).
        on_log: Upstream log messages that arrive outside any call.
        backoff_initial_seconds: First reconnection delay (seconds; SPEC: 1).
        backoff_max_seconds: Largest reconnection delay (seconds; SPEC: 60).

    Raises:
        ConfigError: Two upstreams share a name.
    """

    def __init__(
        self,
        upstreams: Sequence[UpstreamSettings],
        *,
        publish: Publish | None = None,
        on_list_changed: ListChanged | None = None,
        on_log: LogListener | None = None,
        backoff_initial_seconds: float = 1.0,
        backoff_max_seconds: float = 60.0,
    ) -> None:
        names = [upstream.name for upstream in upstreams]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ConfigError(f"duplicate upstream name {duplicates[0]!r}")
        self._publish = publish
        self._on_list_changed = on_list_changed
        self._on_log = on_log
        self.connections: dict[str, UpstreamConnection] = {
            upstream.name: UpstreamConnection(
                upstream,
                on_change=self._changed,
                on_log=self._log,
                on_resource_updated=self._resource_updated,
                backoff_initial_seconds=backoff_initial_seconds,
                backoff_max_seconds=backoff_max_seconds,
            )
            for upstream in upstreams
        }
        self.actions: dict[str, list[UpstreamAction]] = {name: [] for name in self.connections}
        self._on_resource_updated: list[ResourceListener] = []
        self._tasks: anyio.abc.TaskGroup | None = None

    @asynccontextmanager
    async def running(self) -> AsyncGenerator[UpstreamManager]:
        """Run every upstream for the ``with`` block; on exit stop them (stdio processes end).

        Entering waits for each upstream's first connection attempt (ready or down), so the
        server's first ``tools/list`` already shows the tools of the upstreams that are up.
        """
        async with anyio.create_task_group() as tg:
            for connection in self.connections.values():
                await tg.start(connection.run)
            self._tasks = tg
            try:
                yield self
            finally:
                with anyio.CancelScope(shield=True):
                    await self.stop()
                self._tasks = None

    def start_soon(self, task: Callable[[], Coroutine[Any, Any, None]]) -> bool:
        """Run ``task`` beside the connections until they stop; ``False`` (not started) outside ``running()``.

        The transport runs a parked 2026-07-28 upstream call here: it outlives the request that
        started it (SPEC §11). ``task`` must not raise.
        """
        if self._tasks is None:
            return False
        self._tasks.start_soon(task)
        return True

    async def stop(self) -> None:
        """Stop every upstream (after the gate's drain, on SIGTERM)."""
        async with anyio.create_task_group() as tg:
            for connection in self.connections.values():
                tg.start_soon(connection.stop)

    def on_list_changed(self, listener: Callable[[Any], Awaitable[None]]) -> None:
        """Forward upstream prompt and resource list changes to ``listener(kind)`` (the transport)."""
        previous = self._on_list_changed

        async def both(name: str, kind: ChangeKind) -> None:
            if previous is not None:
                await previous(name, kind)
            await listener(kind)

        self._on_list_changed = both

    def on_resource_updated(self, listener: ResourceListener) -> None:
        """Forward each upstream ``notifications/resources/updated`` to ``listener(connection, uri)``."""
        self._on_resource_updated.append(listener)

    async def _resource_updated(self, connection: UpstreamConnection, uri: str) -> None:
        for listener in self._on_resource_updated:
            await listener(connection, uri)

    def health(self) -> list[dict[str, Any]]:
        """``[{name, state, tools}]`` for ``/health`` (SPEC §11); ``tools`` counts guarded tools."""
        return [
            {"name": name, "state": connection.state, "tools": len(self.actions[name])}
            for name, connection in self.connections.items()
        ]

    def all_actions(self) -> list[UpstreamAction]:
        """Every guarded upstream tool currently listed."""
        return [item for actions in self.actions.values() for item in actions]

    async def _changed(self, connection: UpstreamConnection, kind: ChangeKind) -> None:
        if kind == "tools":
            actions = actions_for(connection)
            self.actions[connection.name] = actions
            if self._publish is not None:
                published = self._publish(f"upstream:{connection.name}", actions)
                if published is not None:
                    await published
        elif kind in ("prompts", "resources") and self._on_list_changed is not None:
            await self._on_list_changed(connection.name, kind)

    async def _log(self, connection: UpstreamConnection, params: types.LoggingMessageNotificationParams) -> None:
        if self._on_log is not None:
            await self._on_log(connection.name, params)
