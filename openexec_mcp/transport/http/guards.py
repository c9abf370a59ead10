"""Per-request guards of the HTTP surface: loopback browser guard, bearer scopes, rate limit (SPEC §8, §10).

- "Loopback" is decided once, here, with :mod:`ipaddress`: ``127.0.0.0/8``, ``::1`` in any
  spelling (``0:0:0:0:0:0:0:1``, ``[::1]``), and ``localhost``. Every loopback bind gets the
  Host/Origin check, on the plain routes and (through the SDK's transport-security settings) on
  ``/mcp``, ``/sse`` and ``/messages/``.
- Bearer tokens are verified once per request by the SDK's ``BearerAuthBackend`` (installed
  app-wide when ``[[auth.tokens]]`` is set); the plain routes read ``request.user``.
- The read and approval routes are rate limited per token tenant, or per client address without
  tokens; a refusal is 429 ``rate_limited`` and records nothing.
- :func:`read_body` bounds a plain route's request body before anything parses it.
"""

from __future__ import annotations

import ipaddress

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from openexec_mcp.errors import MalformedInputError
from openexec_mcp.gate.admission import TokenBucket

__all__ = ["BrowserGuard", "Caller", "RateLimit", "is_loopback", "read_body", "transport_security"]


def is_loopback(host: str) -> bool:
    """Say whether the bind address ``host`` is loopback (SPEC §10).

    Args:
        host: A ``--host`` value: an IPv4 or IPv6 literal (brackets allowed) or a name.

    Returns:
        ``True`` for ``localhost`` and every address in ``127.0.0.0/8`` or equal to ``::1``
        (including IPv4-mapped ``::ffff:127.x.y.z``); ``False`` for any other name or address.
    """
    name = host.strip().lower().removeprefix("[").removesuffix("]")
    if name in ("localhost", "localhost."):
        return True
    try:
        address = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def transport_security(host: str) -> TransportSecuritySettings | None:
    """Return the Host/Origin settings for a loopback bind (both the SDK's and ours), else ``None``.

    The allowed Host names are the loopback names clients use plus the bind address in its own
    and its compressed spelling, each with any port; an ``Origin``, when sent, must be one of
    them over ``http``.
    """
    if not is_loopback(host):
        return None
    names = {"127.0.0.1", "localhost", "[::1]"}
    bare = host.strip().removeprefix("[").removesuffix("]")
    try:
        address = ipaddress.ip_address(bare)
        for spelling in (bare, str(address), address.exploded):
            names.add(f"[{spelling}]" if address.version == 6 else spelling)
    except ValueError:
        names.add(bare)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=sorted({*names, *(f"{name}:*" for name in names)}),
        allowed_origins=sorted({*(f"http://{name}" for name in names), *(f"http://{name}:*" for name in names)}),
    )


class BrowserGuard:
    """The Host/Origin check of a loopback bind on the plain routes.

    On loopback (where no token is required) a web page the user visits could otherwise drive the
    server: a cross-site ``POST /execute`` is a "simple" request that browsers send without a
    CORS preflight, and DNS rebinding lets a page read the answers. So, as the SDK does for
    ``/mcp`` and ``/sse``: the Host must be a loopback name, and a request that carries an Origin
    (browsers always send one on a cross-site POST; curl and SDK clients send none) must come from
    a loopback origin. Content-Type is not checked, so plain ``curl -d`` keeps working.

    Args:
        settings: From :func:`transport_security`; ``None`` turns the guard off (non-loopback
            binds require bearer tokens, which browsers never attach on their own).
    """

    def __init__(self, settings: TransportSecuritySettings | None) -> None:
        self._middleware = TransportSecurityMiddleware(settings) if settings is not None else None

    async def refuse(self, request: Request) -> Response | None:
        """Return the 421/403 refusal for a cross-site or rebound request, else ``None``."""
        if self._middleware is None:
            return None
        refused = await self._middleware.validate_request(request, is_post=False)
        if refused is None:
            return None
        body = {"error": {"code": "forbidden", "message": "cross-site or rebound request refused"}}
        return JSONResponse(body, status_code=refused.status_code)


class Caller:
    """Who is calling, as the SDK's ``BearerAuthBackend`` established it.

    Args:
        tokens_configured: Whether ``[[auth.tokens]]`` is set (then a token is required).
    """

    def __init__(self, tokens_configured: bool) -> None:
        self.tokens_configured = tokens_configured

    @staticmethod
    def user(request: Request) -> AuthenticatedUser | None:
        """Return the verified token's user, or ``None`` (no token, unknown token, auth off)."""
        user = request.scope.get("user")
        return user if isinstance(user, AuthenticatedUser) else None

    def require(self, request: Request, scope: str) -> tuple[str | None, Response | None]:
        """Check the request's verified token for ``scope``.

        Returns:
            ``(tenant_id, None)`` when allowed (``tenant_id`` is ``None`` when auth is off), else
            ``(None, response)`` with a 401 (missing or unknown token) or 403 (scope missing).
        """
        if not self.tokens_configured:
            return None, None
        user = self.user(request)
        if user is None:
            return None, JSONResponse(
                {"error": {"code": "unauthorized", "message": "a valid bearer token is required"}},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if scope not in user.scopes:
            return None, JSONResponse(
                {"error": {"code": "forbidden", "message": f"this token lacks the '{scope}' scope"}},
                status_code=403,
                headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
            )
        return user.access_token.client_id, None


class RateLimit:
    """A token bucket per tenant (with tokens) or per client address (without) for the plain routes.

    Args:
        rate: Requests per second; ``0`` turns it off.
        burst: Requests allowed at once.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self._bucket = TokenBucket(rate, burst)

    def refuse(self, request: Request, tenant_id: str | None) -> Response | None:
        """Take one token for the caller; return the 429 refusal when none is left."""
        address = request.client.host if request.client else "-"
        key = f"tenant:{tenant_id}" if tenant_id is not None else f"addr:{address}"
        if self._bucket.allow(key):
            return None
        body = {"error": {"code": "rate_limited", "message": "too many requests; retry later"}}
        return JSONResponse(body, status_code=429, headers={"Retry-After": "1"})


async def read_body(request: Request, limit: int) -> bytes:
    """Return the request body, refused as soon as it is known to exceed ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before any byte is read; otherwise the
    stream is read chunk by chunk and refused once the running size passes the limit, so a body
    without a length (chunked) never grows past it in memory.

    Raises:
        MalformedInputError: The body is over ``limit`` bytes (an ``invalid_request``, SPEC §2).
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise MalformedInputError(f"body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise MalformedInputError(f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
