"""Resource subscriptions held at one upstream, in either protocol era (SPEC §11, pass-through).

:class:`ResourceWatch` keeps the set of resource URIs openexec-mcp wants change notices for from
one upstream, and holds them there while the connection is ready:

- handshake-era upstream: ``resources/subscribe`` once per URI (and ``resources/unsubscribe``);
  its ``notifications/resources/updated`` arrive through the client's message handler;
- 2026-07-28 upstream: one ``subscriptions/listen`` stream per URI, whose ``ResourceUpdated``
  events are the notices.

After a reconnection every wanted URI is subscribed again. Each notice is passed to
``on_updated(uri)``; which clients get it is :mod:`openexec_mcp.upstream.subscriptions`' job.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
from mcp import Client
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.shared.subscriptions import ResourceUpdated

from openexec_mcp.errors import UpstreamUnavailableError
from openexec_mcp.upstream.results import describe

__all__ = ["ResourceWatch"]

logger = logging.getLogger("openexec_mcp.upstream")


class ResourceWatch:
    """The resource subscriptions of one upstream connection.

    Args:
        name: The upstream's name (for logs).
        on_updated: Awaited with the URI of each ``notifications/resources/updated`` the upstream sends.
    """

    def __init__(self, name: str, on_updated: Callable[[str], Awaitable[None]]) -> None:
        self._name = name
        self._on_updated = on_updated
        self.wanted: set[str] = set()
        """The URIs subscribed at the upstream (held again after each reconnection)."""
        self._client: Client | None = None
        self._modern = False
        self._tg: anyio.abc.TaskGroup | None = None
        self._streams: dict[str, anyio.CancelScope] = {}

    async def attach(self, client: Client, tg: anyio.abc.TaskGroup, *, modern: bool) -> None:
        """Subscribe every wanted URI on a connection that became ready (a refusal is logged).

        ``tg`` is the connection's task group (2026-07-28 listen streams run in it).
        """
        self._client, self._tg, self._modern = client, tg, modern
        for uri in sorted(self.wanted):
            try:
                await self._hold(uri)
            except (MCPError, UpstreamUnavailableError, RuntimeError, TimeoutError) as exc:
                logger.warning("upstream %r: re-subscribing %s failed: %s", self._name, uri, describe(exc))

    def detach(self) -> None:
        """Forget the ended connection: its subscriptions went with it (the wanted set stays)."""
        self._client = self._tg = None
        self._streams.clear()

    async def subscribe(self, uri: str) -> None:
        """Hold a subscription to ``uri`` at the upstream (idempotent).

        Raises:
            MCPError: The upstream refused (for example, it does not support subscriptions).
            UpstreamUnavailableError: The upstream is not connected.
        """
        if uri in self.wanted:
            return
        await self._hold(uri)
        self.wanted.add(uri)

    async def unsubscribe(self, uri: str) -> None:
        """Stop holding ``uri`` (best effort at the upstream; idempotent)."""
        if uri not in self.wanted:
            return
        self.wanted.discard(uri)
        scope = self._streams.pop(uri, None)
        if scope is not None:
            scope.cancel()
            return
        client = self._client
        if client is None or self._modern:
            return
        try:
            with warnings.catch_warnings(), anyio.fail_after(10):
                warnings.simplefilter("ignore", MCPDeprecationWarning)  # the 2025 verb, deprecated in 2026-07-28
                await client.unsubscribe_resource(uri)  # pyright: ignore[reportDeprecated]
        except (MCPError, TimeoutError) as exc:
            logger.info("upstream %r: unsubscribing %s failed: %s", self._name, uri, describe(exc))

    async def _hold(self, uri: str) -> None:
        client, tg = self._client, self._tg
        if client is None or tg is None:
            raise UpstreamUnavailableError(f"upstream {self._name!r} is not connected")
        if not self._modern:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await client.subscribe_resource(uri)  # pyright: ignore[reportDeprecated]
            return
        await tg.start(self._listen, client, uri)

    async def _listen(
        self, client: Client, uri: str, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """One 2026-07-28 ``subscriptions/listen`` stream for ``uri``; started once acknowledged."""
        with anyio.CancelScope() as scope:
            started = False
            try:
                async with client.listen(resource_subscriptions=[uri]) as subscription:
                    self._streams[uri] = scope
                    started = True
                    task_status.started()
                    async for event in subscription:
                        if isinstance(event, ResourceUpdated):
                            await self._on_updated(event.uri)
            except Exception as exc:
                if not started:
                    raise
                logger.info("upstream %r: the listen stream for %s ended: %s", self._name, uri, describe(exc))
            finally:
                if self._streams.get(uri) is scope:
                    del self._streams[uri]

    async def notified(self, uri: str) -> None:
        """Pass on a handshake-era ``notifications/resources/updated`` for ``uri``.

        A 2026-07-28 upstream's notices are taken from the listen streams only (the SDK also hands
        listen-stream frames to the message handler: taking both would deliver twice).
        """
        if not self._modern:
            await self._on_updated(uri)
