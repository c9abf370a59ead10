"""ASGI layers in front of the SDK's MCP endpoints: the raw-bytes check and the per-tenant session cap.

- :class:`IngressMiddleware` reads the body of a ``POST`` to ``/mcp`` or ``/messages/`` (up to the
  SDK's own 4 MiB limit), runs :class:`~openexec_mcp.transport.ingress.IngressCheck` on it, and
  replays the original or rewritten frame to the SDK (SPEC §2, §10). A dropped notification is
  answered ``202 Accepted``, as the SDK answers one.
- :class:`SessionCap` refuses to open a new streamable-HTTP session for a tenant that already
  holds ``mcp.max_sessions_per_tenant`` of them (503, a JSON-RPC error body), so one token cannot
  take every session of the SDK's global cap (``mcp.max_sessions``). :class:`StreamCap` does the
  same for legacy SSE streams, which the SDK does not cap at all.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openexec_mcp.core.canonical import json_object
from openexec_mcp.transport.ingress import HARD_LIMIT_BYTES, IngressCheck

__all__ = ["IngressMiddleware", "SessionCap", "StreamCap"]


class IngressMiddleware:
    """Run the raw-bytes check on the body of every ``POST`` before ``app`` parses it.

    Args:
        app: The SDK endpoint (``/mcp`` or ``/messages/``).
        check: The check shared with the gate extension.
        tokens_configured: With tokens, a request without a verified token goes straight to the
            SDK (which answers 401 without reading it): no body is parsed for an anonymous caller.
    """

    def __init__(self, app: ASGIApp, check: IngressCheck, *, tokens_configured: bool = False) -> None:
        self.app = app
        self.check = check
        self.tokens_configured = tokens_configured

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        anonymous = self.tokens_configured and not isinstance(scope.get("user"), AuthenticatedUser)
        if scope["type"] != "http" or scope["method"] != "POST" or anonymous:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its body
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
            if size > HARD_LIMIT_BYTES:
                break  # the SDK answers 413; give it what was read and the rest of the stream
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        complete = size <= HARD_LIMIT_BYTES
        checked = await self.check.check(body) if complete else body
        if checked is None:
            await Response(status_code=202)(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        if complete:
            headers.append((b"content-length", str(len(checked)).encode("ascii")))
        replay = {"type": "http.request", "body": checked, "more_body": not complete}
        pending: list[Message] = [replay]

        async def replayed() -> Message:
            return pending.pop() if pending else await receive()

        await self.app({**scope, "headers": headers}, replayed, send)


class SessionCap:
    """Refuse a new MCP session to a tenant at its cap (see the module docstring).

    Args:
        app: The ``/mcp`` endpoint.
        manager: The SDK's session manager; its owners table tells whose each open session is.
        per_tenant: Sessions one tenant may hold open at once.
        default_tenant: The tenant of callers without a token (auth off).
    """

    def __init__(
        self, app: ASGIApp, manager: StreamableHTTPSessionManager, per_tenant: int, default_tenant: str
    ) -> None:
        self.app = app
        self.manager = manager
        self.per_tenant = per_tenant
        self.default_tenant = default_tenant
        self._opening: Counter[str] = Counter()

    def _open_sessions(self, tenant: str) -> int:
        # The SDK keeps, per session id, the principal that opened it (its token's client_id,
        # which is our tenant_id); without auth every session is the default tenant's.
        owners: dict[str, Any] = getattr(self.manager, "_session_owners", {})
        if not owners:
            return len(getattr(self.manager, "_server_instances", {}))
        # AuthorizationContext is a TypedDict: a plain mapping at run time.
        return sum(1 for owner in owners.values() if json_object(owner) is not None and owner["client_id"] == tenant)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        headers = {name.lower(): value for name, value in scope.get("headers", [])}
        era = headers.get(b"mcp-protocol-version")
        # As the SDK routes: a request of a sessionless era (2026-07-28) never opens a session.
        opening = (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and b"mcp-session-id" not in headers
            and (era is None or era.decode("latin-1") in HANDSHAKE_PROTOCOL_VERSIONS)
        )
        if not opening:
            await self.app(scope, receive, send)
            return
        user = scope.get("user")
        tenant = user.access_token.client_id if isinstance(user, AuthenticatedUser) else self.default_tenant
        if self._open_sessions(tenant) + self._opening[tenant] >= self.per_tenant:
            error = {"code": -32603, "message": "too many open sessions for this tenant"}
            body = {"jsonrpc": "2.0", "id": None, "error": error}
            await JSONResponse(body, status_code=503)(scope, receive, send)
            return
        # Counted as opening until the answer starts: by then the SDK has registered the session
        # (or refused it), and the owners table above counts it.
        self._opening[tenant] += 1
        counted = True

        def settle() -> None:
            nonlocal counted
            if counted:
                counted = False
                self._opening[tenant] -= 1

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                settle()
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            settle()


class StreamCap:
    """Cap the open legacy SSE streams (``GET /sse``): per tenant and in all (the SDK has no cap).

    Args:
        app: The ``/sse`` endpoint.
        per_tenant: Streams one tenant may hold open at once (``mcp.max_sessions_per_tenant``).
        total: Streams open at once, all tenants together (``mcp.max_sessions``).
        default_tenant: The tenant of callers without a token (auth off).
    """

    def __init__(self, app: ASGIApp, per_tenant: int, total: int, default_tenant: str) -> None:
        self.app = app
        self.per_tenant = per_tenant
        self.total = total
        self.default_tenant = default_tenant
        self._open: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        user = scope.get("user")
        tenant = user.access_token.client_id if isinstance(user, AuthenticatedUser) else self.default_tenant
        if self._open[tenant] >= self.per_tenant or self._open.total() >= self.total:
            body = {"error": {"code": "rate_limited", "message": "too many open SSE streams for this tenant"}}
            await JSONResponse(body, status_code=503)(scope, receive, send)
            return
        self._open[tenant] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._open[tenant] -= 1
