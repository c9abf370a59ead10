"""Observing what leaves for an upstream: was a ``tools/call`` sent, did the transport end (SPEC §11).

"Sent" is observed, not guessed: :func:`observed` wraps a transport's streams so that the
``tools/call`` message reaching the transport marks the current call's :class:`SendProbe`, and
:class:`ProbeTransport` (HTTP) marks it when the TCP connection is refused, so no byte of the
request left. The read side ending sets the connection's ``closed`` event. :func:`transport_for`
builds the SDK transport of one ``[[upstreams]]`` table.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import mcp_types as types
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from openexec_mcp.upstream.config import UpstreamSettings

__all__ = ["SEND_PROBE", "ProbeTransport", "SendProbe", "http_timeout", "observed", "transport_for"]


@dataclass
class SendProbe:
    """What became of one forwarded call's request on its way out."""

    written: bool = False
    """The ``tools/call`` message was handed to the transport (it may have reached the upstream)."""
    connect_failed: bool = False
    """HTTP: the TCP connection was refused, so no byte of the request left."""


SEND_PROBE: ContextVar[SendProbe | None] = ContextVar("openexec_upstream_send_probe", default=None)
"""The probe of the call being forwarded in this task (``None`` outside a call)."""


def http_timeout() -> httpx2.Timeout:
    """Return the HTTP client timeouts of an upstream (seconds).

    The per-call deadline is ``call_timeout_seconds`` (the SDK's request clock); the read timeout
    only has to outlive a long-open SSE stream.
    """
    return httpx2.Timeout(30.0, read=300.0)


class ProbeTransport(httpx2.AsyncBaseTransport):
    """An HTTP transport that marks the current call's probe when the connection is refused."""

    def __init__(self) -> None:
        self._inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send ``request``; a refused connection marks the probe, then raises ``httpx2.ConnectError``."""
        try:
            return await self._inner.handle_async_request(request)
        except httpx2.ConnectError:
            probe = SEND_PROBE.get()
            if probe is not None:
                probe.connect_failed = True
            raise

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._inner.aclose()


def transport_for(settings: UpstreamSettings, stack: AsyncExitStack) -> Any:
    """Return the SDK client transport for one upstream (stdio, streamable HTTP or legacy SSE).

    HTTP clients use :class:`ProbeTransport`; the streamable HTTP client is closed by ``stack``.
    """
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
                headers=headers, timeout=timeout or http_timeout(), auth=auth, transport=ProbeTransport()
            )

        return sse_client(settings.url, headers=headers, httpx_client_factory=factory)
    http_client = httpx2.AsyncClient(headers=headers, timeout=http_timeout(), transport=ProbeTransport())
    stack.push_async_callback(http_client.aclose)
    return streamable_http_client(settings.url, http_client=http_client)


@asynccontextmanager
async def observed(transport: Any, closed: anyio.Event) -> AsyncGenerator[tuple[Any, Any]]:
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
        probe = SEND_PROBE.get()
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
