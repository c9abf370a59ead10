"""The HTTP surface of SPEC §8, in the same process and Starlette app as the MCP HTTP transports.

``build_http_app`` serves the plain routes of its route table, streamable HTTP MCP at ``/mcp`` and
legacy SSE MCP at ``/sse`` + ``/messages/``. Every request to a plain route passes, in order: the
loopback browser guard (:mod:`.guards`), the bearer scope (read from ``request.user``, which the
SDK's ``BearerAuthBackend`` sets app-wide), the rate limit of the read and approval routes, then
the handler. The handlers live beside this module, one module per family: :mod:`.routes`
(``/``, probes, ``/keys``, ``POST /execute``, ``POST /receipts/verify``), :mod:`.approval_routes`
(``/approvals``), :mod:`.ledger_routes` (``/ledger/*``) and :mod:`.grant_routes` (``/grants``).
``POST /execute`` answers the SPEC §6 envelope for every outcome, with the status of SPEC §8;
other refusals are a JSON body with a stable code. No answer carries store addresses, driver
text, exception text or paths (SPEC §10): those go to the log.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import datetime
from typing import Any

from mcp.server.auth.middleware.auth_context import get_access_token
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from openexec_mcp.core.clock import utc_now
from openexec_mcp.errors import OpenExecError, StoreUnavailableError
from openexec_mcp.runtime import Runtime
from openexec_mcp.transport.auth import TokenTable, auth_settings
from openexec_mcp.transport.http.approval_routes import ApprovalRoutes
from openexec_mcp.transport.http.grant_routes import grant_routes
from openexec_mcp.transport.http.guards import BrowserGuard, Caller, RateLimit, transport_security
from openexec_mcp.transport.http.ingress import IngressMiddleware, SessionCap, StreamCap
from openexec_mcp.transport.http.ledger_routes import LedgerRoutes
from openexec_mcp.transport.http.routes import Routes, http_status
from openexec_mcp.transport.ingress import IngressCheck
from openexec_mcp.transport.mcp import build_mcp_server
from openexec_mcp.upstream.manager import UpstreamManager

__all__ = ["build_http_app", "http_status"]

logger = logging.getLogger("openexec_mcp.transport.http.app")

Handler = Callable[[Request], Awaitable[Response]]
TenantHandler = Callable[[Request, "str | None"], Awaitable[Response]]
"""A route handler; the second argument is the bearer token's tenant (``None`` when auth is off)."""

Clock = Callable[[], datetime]
"""Returns the current aware UTC datetime."""


def build_http_app(runtime: Runtime, *, host: str, port: int, clock: Clock = utc_now) -> Starlette:
    """Return the Starlette app serving SPEC §8 routes, ``/mcp``, ``/sse`` and ``/messages/``.

    With ``[[auth.tokens]]`` configured, every route but ``/health`` and ``/ready`` needs a bearer
    token with the route's scope, and the token's tenant is the caller's tenant; ``/health``
    then answers liveness only, and its detail to a token with ``read``.

    Args:
        runtime: The started runtime.
        host: The bind address; every loopback bind gets the Host/Origin guard (SPEC §10).
        port: The port (names this server in the SDK's auth settings).
        clock: The approval routes' clock (aware UTC datetimes): artifact checks and request expiry.
    """
    settings = runtime.settings
    tokens = TokenTable(settings.auth.tokens)
    default_tenant = settings.tenant_id

    def tenant_for(_ctx: Any) -> str:
        token = get_access_token()
        return token.client_id if token is not None else default_tenant

    ingress = IngressCheck(runtime.policy.limits["max_payload_bytes"])
    mcp_server = build_mcp_server(
        runtime.gate,
        tenant_for,
        token_verifier=tokens if tokens else None,
        auth=auth_settings(host, port) if tokens else None,
        request_state_keys=[key.get_secret_value() for key in settings.mcp.request_state_keys],
        request_state_ttl_seconds=settings.mcp.request_state_ttl_seconds,
        ingress=ingress,
        upstreams=runtime.upstreams,
    )
    security = transport_security(host)
    browser_guard = BrowserGuard(security)
    caller = Caller(bool(tokens))
    rate = settings.http.rate_limit_per_second
    burst = settings.http.rate_limit_burst
    rate_limit = RateLimit(
        settings.limits.rate_limit_per_second if rate is None else rate,
        settings.limits.rate_limit_burst if burst is None else burst,
    )
    routes = Routes(runtime, caller, browser_guard)
    approval_routes = ApprovalRoutes(runtime, clock)
    ledger_routes = LedgerRoutes(runtime.ledger, runtime.store, runtime.witnessing)
    for path, methods, scope, limited, handler in (
        ("/", ["GET"], "read", True, routes.index),
        ("/health", ["GET"], None, False, routes.health),
        ("/ready", ["GET"], None, False, routes.ready),
        ("/version", ["GET"], "read", True, routes.version),
        ("/keys", ["GET"], "read", True, routes.keys),
        ("/execute", ["POST"], "execute", False, routes.execute),  # the gate's own rate limit
        ("/receipts/verify", ["POST"], "read", True, routes.verify),
        ("/approvals", ["POST"], "approve", True, approval_routes.submit),
        ("/approvals", ["GET"], "read", True, approval_routes.list),
        ("/approvals/{request_id}", ["GET"], "read", True, approval_routes.get),
        ("/ledger/checkpoint", ["GET"], "read", True, ledger_routes.checkpoint),
        ("/ledger/proof/{exec_id}", ["GET"], "read", True, ledger_routes.proof),
        ("/ledger/consistency", ["GET"], "read", True, ledger_routes.consistency),
        *grant_routes(runtime, clock),
    ):
        wrapped = _guarded(handler, caller, scope, browser_guard, rate_limit if limited else None)
        mcp_server.custom_route(path, methods=methods)(wrapped)
    app = mcp_server.streamable_http_app(
        host=host,
        transport_security=security,
        max_sessions=settings.mcp.max_sessions,
        session_idle_timeout=settings.mcp.session_idle_seconds,
    )
    app.router.routes.extend(mcp_server.sse_app(host=host, transport_security=security).routes)
    for route in app.router.routes:
        if isinstance(route, Route) and route.path == "/mcp":
            per_tenant = settings.mcp.max_sessions_per_tenant
            checked = IngressMiddleware(route.app, ingress, tokens_configured=bool(tokens))
            route.app = SessionCap(checked, mcp_server.session_manager, per_tenant, default_tenant)
        elif isinstance(route, Route) and route.path == "/sse":
            route.app = StreamCap(
                route.app, settings.mcp.max_sessions_per_tenant, settings.mcp.max_sessions, default_tenant
            )
        elif isinstance(route, Mount) and route.path.rstrip("/") == "/messages":
            route.app = IngressMiddleware(route.app, ingress, tokens_configured=bool(tokens))
    if runtime.upstreams is not None:
        app.router.lifespan_context = _with_upstreams(app.router.lifespan_context, runtime.upstreams)
    return app


def _with_upstreams(lifespan: Any, upstreams: UpstreamManager) -> Any:
    """Return the app's lifespan with the upstreams running inside it (stopped after the drain, SPEC §11)."""

    @contextlib.asynccontextmanager
    async def run(app: Any) -> AsyncGenerator[Any]:
        async with lifespan(app) as state, upstreams.running():
            yield state

    return run


def _guarded(
    handler: TenantHandler, caller: Caller, scope: str | None, guard: BrowserGuard, rate_limit: RateLimit | None
) -> Handler:
    """Browser guard, bearer scope, rate limit, then the handler; never raise (see the module docstring)."""

    async def wrapped(request: Request) -> Response:
        # Probes (/health, /ready) stay open to any Host; /health shows its detail only past the guard.
        if scope is not None and (refused := await guard.refuse(request)) is not None:
            return refused
        tenant_id: str | None = None
        if scope is not None:
            tenant_id, refusal = caller.require(request, scope)
            if refusal is not None:
                return refusal
        if rate_limit is not None and (limited := rate_limit.refuse(request, tenant_id)) is not None:
            return limited
        try:
            return await handler(request, tenant_id)
        except StoreUnavailableError as exc:
            logger.error("store unavailable on %s %s: %s", request.method, request.url.path, exc.message)
            body = {"error": {"code": exc.code, "message": "the store is unavailable; retry later"}}
            return JSONResponse(body, status_code=503)
        except OpenExecError as exc:
            return JSONResponse({"error": exc.to_dict()}, status_code=422)
        except Exception:
            logger.exception("internal error on %s %s", request.method, request.url.path)
            return JSONResponse({"error": {"code": "internal_error", "message": "internal error"}}, status_code=500)

    wrapped.__name__ = handler.__name__
    return wrapped
