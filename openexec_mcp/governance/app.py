"""The governance console and seed API as a Starlette app (SPEC §13).

Browser side: server-rendered Jinja2 pages, no JavaScript at all. Sessions are random ids in an
``HttpOnly``, ``SameSite=Strict`` cookie, kept in memory; every form carries the session's CSRF
token, and a POST whose ``Origin`` (or ``Sec-Fetch-Site``) says it comes from another site is
refused before the token is even looked at. Every answer carries a strict Content-Security-Policy
(``default-src 'none'``: no script can run, inline or not), ``X-Frame-Options: DENY`` and
``Referrer-Policy: same-origin`` (so same-origin form posts carry their Origin).

Seed API (bearer ``CLAWSHIELD_API_KEY``): ``POST /v1/approval-requests`` (an execution server
pushes a new pending request) and ``GET /v1/decisions?since=CURSOR`` (it polls signed artifacts).
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.resources import files
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from openexec_mcp.governance.config import Approver
from openexec_mcp.governance.display import console_environment
from openexec_mcp.governance.notify import NotificationLoop
from openexec_mcp.governance.records import DecisionError
from openexec_mcp.governance.service import GovernanceService

__all__ = ["CSP", "SESSION_COOKIE", "build_governance_app"]

SESSION_COOKIE = "oe_gov_session"
SESSION_SECONDS = 8 * 3600
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_MAX_FORM_BYTES = 16 * 1024
_MAX_PUSH_BYTES = 1024 * 1024


@dataclass
class _Session:
    csrf: str
    created: float
    approver: Approver | None = None


class _SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"  # no-referrer would make Origin "null"
        response.headers["Cache-Control"] = "no-store"
        return response


def build_governance_app(service: GovernanceService, notifications: NotificationLoop | None = None) -> Starlette:
    """Return the console + seed API app for ``service``.

    Args:
        service: The governance service.
        notifications: Woken when a request is pushed; started and stopped with the app.
    """
    env = console_environment()
    sessions: dict[str, _Session] = {}
    own_origin = _origin(service.config.public_url)
    css = files("openexec_mcp.governance").joinpath("static", "console.css").read_bytes()

    def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(**context), status_code=status)

    def session_of(request: Request) -> _Session | None:
        sid = request.cookies.get(SESSION_COOKIE, "")
        found = sessions.get(sid)
        if found is not None and time.monotonic() - found.created > SESSION_SECONDS:
            sessions.pop(sid, None)
            return None
        return found

    def new_session(approver: Approver | None = None) -> tuple[str, _Session]:
        if len(sessions) > 10_000:  # bounded: the oldest sessions go first
            for sid in sorted(sessions, key=lambda s: sessions[s].created)[:1000]:
                sessions.pop(sid)
        sid = secrets.token_urlsafe(32)
        sessions[sid] = _Session(csrf=secrets.token_urlsafe(32), created=time.monotonic(), approver=approver)
        return sid, sessions[sid]

    def set_cookie(response: Response, sid: str) -> Response:
        response.set_cookie(
            SESSION_COOKIE,
            sid,
            max_age=SESSION_SECONDS,
            httponly=True,
            samesite="strict",
            path="/",
            secure=own_origin.startswith("https:"),
        )
        return response

    def cross_site(request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is not None and origin != "null" and origin.rstrip("/") != own_origin:
            return True
        if origin == "null":
            return True
        return request.headers.get("sec-fetch-site") in ("cross-site", "same-site")

    async def checked_form(request: Request, session: _Session | None) -> dict[str, str] | Response:
        """Return the form of a state-changing POST, or the refusal (403): cross-site, no session, bad CSRF token."""
        if cross_site(request):
            return render("result.html", 403, error="cross-site request refused", approver=None, csrf="")
        body = await request.body()
        if len(body) > _MAX_FORM_BYTES:
            return render("result.html", 413, error="form too large", approver=None, csrf="")
        form = await request.form()
        token = form.get("csrf")
        if session is None or not isinstance(token, str) or not hmac.compare_digest(token, session.csrf):
            return render("result.html", 403, error="missing or invalid CSRF token", approver=None, csrf="")
        return {key: value for key, value in form.items() if isinstance(value, str)}

    async def login_page(request: Request) -> Response:
        session = session_of(request)
        if session is not None:
            return render("login.html", approver=None, csrf=session.csrf, error=None)
        sid, session = new_session()
        return set_cookie(render("login.html", approver=None, csrf=session.csrf, error=None), sid)

    async def login(request: Request) -> Response:
        session = session_of(request)
        form = await checked_form(request, session)
        if isinstance(form, Response):
            return form
        approver = service.approver_for_token(form.get("token", ""))
        if approver is None:
            return render("login.html", 401, approver=None, csrf=session.csrf if session else "", error="unknown token")
        sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)  # a fresh id after sign-in
        sid, _ = new_session(approver)
        return set_cookie(RedirectResponse("/", status_code=303), sid)

    async def logout(request: Request) -> Response:
        session = session_of(request)
        form = await checked_form(request, session)
        if isinstance(form, Response):
            return form
        sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    def signed_in(request: Request) -> _Session | None:
        session = session_of(request)
        return session if session is not None and session.approver is not None else None

    async def index(request: Request) -> Response:
        session = signed_in(request)
        if session is None or session.approver is None:
            return RedirectResponse("/login", status_code=303)
        approver = session.approver
        pending, errors = await anyio.to_thread.run_sync(service.pending, approver)
        history = [d for d in service.history if approver.may_decide(d.tenant_id)]
        revoked = {d.artifact_id for d in history if d.kind == "revoke"}
        return render(
            "index.html",
            approver=approver,
            csrf=session.csrf,
            pending=pending,
            errors=errors,
            history=history,
            revoked=revoked,
        )

    async def request_page(request: Request) -> Response:
        session = signed_in(request)
        if session is None or session.approver is None:
            return RedirectResponse("/login", status_code=303)
        source, request_id = request.path_params["source"], request.path_params["request_id"]
        try:
            item = await anyio.to_thread.run_sync(service.request, source, request_id)
        except (httpx.HTTPError, ValueError, KeyError):
            return render(
                "result.html",
                502,
                error="cannot read this request from its server",
                approver=session.approver,
                csrf=session.csrf,
            )
        if item is None or not session.approver.may_decide(item.tenant_id):
            return render(
                "result.html", 404, error="no such pending request", approver=session.approver, csrf=session.csrf
            )
        tool = await anyio.to_thread.run_sync(service.tool_info, source, str(item.action_request.get("action")))
        return render("request.html", approver=session.approver, csrf=session.csrf, item=item, tool=tool)

    async def decide(request: Request) -> Response:
        session = signed_in(request)
        form = await checked_form(request, session)
        if isinstance(form, Response):
            return form
        assert session is not None and session.approver is not None
        source, request_id = request.path_params["source"], request.path_params["request_id"]
        try:
            decision = await anyio.to_thread.run_sync(service.decide, session.approver, source, request_id, form)
        except DecisionError as exc:
            return render("result.html", 409, error=exc.message, approver=session.approver, csrf=session.csrf)
        except (httpx.HTTPError, ValueError, KeyError):
            return render(
                "result.html",
                502,
                error="cannot read this request from its server",
                approver=session.approver,
                csrf=session.csrf,
            )
        return render("result.html", approver=session.approver, csrf=session.csrf, decision=decision, error=None)

    async def revoke(request: Request) -> Response:
        session = signed_in(request)
        form = await checked_form(request, session)
        if isinstance(form, Response):
            return form
        assert session is not None and session.approver is not None
        source, grant_id = request.path_params["source"], request.path_params["grant_id"]
        try:
            decision = await anyio.to_thread.run_sync(service.revoke, session.approver, source, grant_id)
        except DecisionError as exc:
            return render("result.html", 409, error=exc.message, approver=session.approver, csrf=session.csrf)
        return render("result.html", approver=session.approver, csrf=session.csrf, decision=decision, error=None)

    async def stylesheet(request: Request) -> Response:
        return Response(css, media_type="text/css")

    def api_key_ok(request: Request) -> bool:
        key = service.config.api_key
        header = request.headers.get("authorization", "")
        return key is not None and header.startswith("Bearer ") and hmac.compare_digest(header[7:], key)

    async def push(request: Request) -> Response:
        if not api_key_ok(request):
            return JSONResponse({"error": {"code": "unauthorized", "message": "bad API key"}}, status_code=401)
        body = await request.body()
        if len(body) > _MAX_PUSH_BYTES:
            return JSONResponse({"error": {"code": "invalid_request", "message": "too large"}}, status_code=413)
        try:
            item = service.push(json.loads(body))
        except (DecisionError, ValueError, AttributeError):
            return JSONResponse({"error": {"code": "invalid_request", "message": "not a pending request"}}, 422)
        if notifications is not None:
            notifications.wake()
        return JSONResponse(
            {"request_id": item.request_id, "url": f"{service.config.public_url}/requests/push/{item.request_id}"},
            status_code=201,
        )

    async def decisions(request: Request) -> Response:
        if not api_key_ok(request):
            return JSONResponse({"error": {"code": "unauthorized", "message": "bad API key"}}, status_code=401)
        since = request.query_params.get("since", "0")
        if not since.isdigit():
            return JSONResponse({"error": {"code": "invalid_request", "message": "since must be a cursor"}}, 422)
        return JSONResponse(service.decisions_since(int(since)))

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "servers": [s.url for s in service.config.servers]})

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/requests/{source}/{request_id}", request_page, methods=["GET"]),
        Route("/requests/{source}/{request_id}/decide", decide, methods=["POST"]),
        Route("/grants/{source}/{grant_id}/revoke", revoke, methods=["POST"]),
        Route("/static/console.css", stylesheet, methods=["GET"]),
        Route("/v1/approval-requests", push, methods=["POST"]),
        Route("/v1/decisions", decisions, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncGenerator[None]:
        if notifications is not None:
            notifications.start()
        try:
            yield
        finally:
            if notifications is not None:
                notifications.stop()

    return Starlette(routes=routes, middleware=[Middleware(_SecurityHeaders)], lifespan=lifespan)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
