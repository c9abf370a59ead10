"""Telling connected clients that the tool (prompt, resource) list changed (SPEC §11, "Lifecycle").

The SDK has no server-wide broadcast for the handshake era, so :class:`ListChangedAnnouncer`
remembers every handshake-era connection it sees (a middleware, weak references: a closed connection is
forgotten) and sends each one ``notifications/tools/list_changed``; 2026-07-28 clients learn it
from their ``subscriptions/listen`` streams, through the SDK's subscription bus. It also makes
the handshake-era ``initialize`` advertise ``listChanged``.
"""

from __future__ import annotations

import functools
import logging
import weakref
from typing import Any, Literal

from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.mcpserver import MCPServer
from mcp.shared.subscriptions import PromptsListChanged, ResourcesListChanged, ToolsListChanged
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

__all__ = ["ListChangedAnnouncer"]

logger = logging.getLogger("openexec_mcp.upstream")

Kind = Literal["tools", "prompts", "resources"]


class ListChangedAnnouncer:
    """Sends ``notifications/<kind>/list_changed`` to every client of ``server``.

    Args:
        server: The openexec-mcp MCP server; the announcer installs its middleware and the
            ``listChanged`` capability on it.
    """

    def __init__(self, server: MCPServer[Any]) -> None:
        self._server = server
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()
        low = server._lowlevel_server  # pyright: ignore[reportPrivateUsage]
        options = NotificationOptions(tools_changed=True, prompts_changed=True, resources_changed=True)
        low.create_initialization_options = functools.partial(  # type: ignore[method-assign]
            low.create_initialization_options, notification_options=options
        )
        server.middleware.append(self._remember)

    async def _remember(self, ctx: Any, call_next: Any) -> Any:
        # ServerSession objects live for one request; the Connection lives as long as the client.
        connection = getattr(getattr(ctx, "session", None), "_connection", None)
        if connection is not None and getattr(ctx, "protocol_version", None) not in MODERN_PROTOCOL_VERSIONS:
            self._connections.add(connection)
        return await call_next(ctx)

    async def announce(self, kind: Kind = "tools") -> None:
        """Tell every client that the ``kind`` list changed (best effort: a gone client is skipped)."""
        for connection in list(self._connections):
            try:
                if kind == "tools":
                    await connection.send_tool_list_changed()
                elif kind == "prompts":
                    await connection.send_prompt_list_changed()
                else:
                    await connection.send_resource_list_changed()
            except Exception:  # a closed stream: the client is gone
                self._connections.discard(connection)
        event = {"tools": ToolsListChanged, "prompts": PromptsListChanged, "resources": ResourcesListChanged}[kind]
        try:
            await self._server._subscriptions.publish(event())  # pyright: ignore[reportPrivateUsage]
        except Exception:
            logger.debug("publishing a list change to subscriptions failed", exc_info=True)


class ToolSync:
    """Keeps an MCP server's tool list equal to a catalog's actions, and announces each change.

    Args:
        server: The MCP server (its tools are added and removed with the SDK's own calls).
        tool_for: Builds the SDK ``Tool`` of one action (the transport's advertisement).
        announcer: Tells clients after each change.
    """

    def __init__(self, server: MCPServer[Any], tool_for: Any, announcer: ListChangedAnnouncer) -> None:
        self._server = server
        self._tool_for = tool_for
        self._announcer = announcer
        self._listed: dict[str, Any] = {}

    def sync(self, actions: list[Any]) -> bool:
        """Make the listed tools match ``actions``; return whether anything changed."""
        wanted = {action.name: action for action in actions}
        changed = False
        for name in list(self._listed):
            if name not in wanted:
                self._server.remove_tool(name)
                del self._listed[name]
                changed = True
        for name, action in wanted.items():
            seen = _fingerprint(action)
            if self._listed.get(name) == seen:
                continue
            self._server._tool_manager._tools[name] = self._tool_for(action)  # pyright: ignore[reportPrivateUsage]
            self._listed[name] = seen
            changed = True
        return changed

    async def sync_and_announce(self, actions: list[Any]) -> None:
        """:meth:`sync`, then announce ``tools`` when the list changed."""
        if self.sync(actions):
            await self._announcer.announce("tools")


def _fingerprint(action: Any) -> Any:
    fingerprint = getattr(action, "fingerprint", None)
    return fingerprint() if callable(fingerprint) else id(action)
