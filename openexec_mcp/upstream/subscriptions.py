"""Clients' subscriptions to upstream resources, counted and forwarded (SPEC §11, pass-through).

:class:`ResourceSubscriptions` sits between openexec-mcp's clients and its upstreams:

- a handshake-era client's ``resources/subscribe`` (per client connection, idempotent) and a
  2026-07-28 client's ``subscriptions/listen`` with ``resourceSubscriptions`` each count as one
  subscriber of a URI; the upstream that owns the URI is subscribed on the first subscriber and
  unsubscribed after the last (``resources/unsubscribe``, the listen stream ending, or the
  client's connection going away, noticed at the next notice for that URI);
- the upstream's ``notifications/resources/updated`` reaches the handshake-era clients that
  subscribed to that URI, and is published on the SDK's subscription bus, whose listen streams
  deliver it to the 2026-07-28 clients whose filter names the URI.

Not gated and not receipted: a notice only says "read it again".
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any

import anyio
import mcp_types as types
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ResourceUpdated

from openexec_mcp.errors import UpstreamUnavailableError
from openexec_mcp.upstream.connection import UpstreamConnection

__all__ = ["ResourceSubscriptions"]

logger = logging.getLogger("openexec_mcp.upstream")

_RELEASE_TIMEOUT_SECONDS = 10.0
_SUBSCRIBE_TIMEOUT_SECONDS = 30.0


class ResourceSubscriptions:
    """Subscriber counts per resource URI, and delivery of upstream notices.

    Args:
        server: The openexec-mcp MCP server (its subscription bus carries 2026-07-28 notices).
        owner_of: The upstream a URI belongs to; raises ``MCPError`` when none can take it.
    """

    def __init__(self, server: MCPServer[Any], owner_of: Callable[[str], UpstreamConnection]) -> None:
        self._server = server
        self._owner_of = owner_of
        self._sessions: dict[str, weakref.WeakSet[Any]] = {}
        """URI → the handshake-era client connections subscribed to it."""
        self._listens: dict[str, int] = {}
        """URI → how many open 2026-07-28 listen streams name it."""
        self._held: dict[str, UpstreamConnection] = {}
        """URI → the upstream it is subscribed at."""
        self._lock = anyio.Lock()  # one subscribe or unsubscribe at the upstreams at a time

    def count(self, uri: str) -> int:
        """Return how many subscribers ``uri`` has (live handshake-era connections + listen streams)."""
        return len(self._sessions.get(uri, ())) + self._listens.get(uri, 0)

    async def subscribe(self, ctx: Any, uri: str) -> None:
        """Serve ``resources/subscribe`` from the client connection of ``ctx``.

        Raises:
            MCPError: No upstream takes ``uri``, it is not ready, refused the subscription, or did
                not answer within 30 s.
        """
        connection = _client_connection(ctx)
        await self._acquire(uri)
        if connection is None:  # no connection to deliver to: nothing to count
            await self._release(uri)
            return
        self._sessions.setdefault(uri, weakref.WeakSet()).add(connection)

    async def unsubscribe(self, ctx: Any, uri: str) -> None:
        """Serve ``resources/unsubscribe`` from the client connection of ``ctx`` (idempotent)."""
        subscribers = self._sessions.get(uri)
        connection = _client_connection(ctx)
        if subscribers is not None and connection is not None:
            subscribers.discard(connection)
        await self._release(uri)

    def wrap_listen(self, inner: Any) -> Any:
        """Wrap the SDK's ``subscriptions/listen`` handler: its resource URIs count while it runs."""

        async def listen(ctx: Any, params: types.SubscriptionsListenRequestParams) -> Any:
            uris = sorted(set(params.notifications.resource_subscriptions or ()))
            counted: list[str] = []
            try:
                for uri in uris:
                    self._listens[uri] = self._listens.get(uri, 0) + 1
                    counted.append(uri)
                    try:
                        await self._acquire(uri)
                    except MCPError as exc:  # honored anyway (SDK); it just never fires
                        logger.info("listen: resource %s not subscribed upstream: %s", uri, exc.error.message)
                return await inner(ctx, params)
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(_RELEASE_TIMEOUT_SECONDS):
                    for uri in counted:
                        self._listens[uri] -= 1
                        if not self._listens[uri]:
                            del self._listens[uri]
                        await self._release(uri)

        return listen

    async def updated(self, upstream: UpstreamConnection, uri: str) -> None:
        """Deliver an upstream's ``notifications/resources/updated`` for ``uri`` to its subscribers."""
        for connection in list(self._sessions.get(uri, ())):
            try:
                await connection.send_resource_updated(uri)
            except Exception:  # a closed stream: the client is gone
                subscribers = self._sessions.get(uri)
                if subscribers is not None:
                    subscribers.discard(connection)
        try:
            await self._server._subscriptions.publish(ResourceUpdated(uri=uri))  # pyright: ignore[reportPrivateUsage]
        except Exception:
            logger.debug("publishing a resource update to subscriptions failed", exc_info=True)
        await self._release(uri)  # the last subscriber may be gone

    async def _acquire(self, uri: str) -> None:
        """Hold ``uri`` at its upstream if no subscriber holds it yet."""
        async with self._lock:
            if uri in self._held:
                return
            owner = self._owner_of(uri)
            try:
                with anyio.fail_after(_SUBSCRIBE_TIMEOUT_SECONDS):
                    await owner.resources.subscribe(uri)
            except UpstreamUnavailableError as exc:
                raise MCPError(types.INTERNAL_ERROR, exc.message) from None
            except (RuntimeError, TimeoutError) as exc:  # a listen stream lost or never acknowledged
                raise MCPError(types.INTERNAL_ERROR, f"upstream {owner.name!r} did not take the subscription") from exc
            self._held[uri] = owner

    async def _release(self, uri: str) -> None:
        """Unsubscribe ``uri`` at its upstream once it has no subscriber left."""
        async with self._lock:
            if self.count(uri):
                return
            self._sessions.pop(uri, None)
            owner = self._held.pop(uri, None)
            if owner is not None:
                await owner.resources.unsubscribe(uri)


def _client_connection(ctx: Any) -> Any:
    # ServerSession objects live for one request; the Connection lives as long as the client.
    return getattr(getattr(ctx, "session", None), "_connection", None)
