"""The HTTP surface of SPEC §8, in the same process and Starlette app as the MCP HTTP transports.

``build_http_app`` serves the plain routes below, streamable HTTP MCP at ``/mcp`` and legacy SSE
MCP at ``/sse`` + ``/messages/``. Every request to a plain route passes, in order: the loopback
browser guard (:mod:`.guards`), the bearer scope (read from ``request.user``, which the SDK's
``BearerAuthBackend`` sets app-wide), the rate limit of the read and approval routes, then the
handler. ``POST /execute`` answers the SPEC §6 envelope for every outcome, with the status of
SPEC §8; other refusals are a JSON body with a stable code. No answer carries store addresses,
driver text, exception text or paths (SPEC §10): those go to the log.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import platform
import secrets
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import datetime
from typing import Any

import anyio.to_thread
import mcp
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from openexec_mcp import __version__
from openexec_mcp.core.action import parse_run_id
from openexec_mcp.core.approval import parse_approval_artifact
from openexec_mcp.core.canonical import canonicalize, json_object, parse_json, parse_json_strict, sha256_hex
from openexec_mcp.core.clock import format_timestamp, utc_now
from openexec_mcp.core.encoding import b64decode_strict
from openexec_mcp.core.receipt import receipt_hash, verify_receipt
from openexec_mcp.errors import (
    ApprovalError,
    InternalError,
    InvalidRequestError,
    MalformedInputError,
    OpenExecError,
    StoreUnavailableError,
    VerificationError,
)
from openexec_mcp.gate.envelope import refusal_envelope
from openexec_mcp.gate.pipeline import Answer, CallContext
from openexec_mcp.keystore import public_keys_document
from openexec_mcp.runtime import Runtime
from openexec_mcp.store.base import ApprovalRequest
from openexec_mcp.transport.auth import TokenTable, auth_settings
from openexec_mcp.transport.http.grant_routes import grant_routes
from openexec_mcp.transport.http.guards import BrowserGuard, Caller, RateLimit, transport_security
from openexec_mcp.transport.http.ingress import IngressMiddleware, SessionCap, StreamCap
from openexec_mcp.transport.http.ledger_routes import LedgerRoutes
from openexec_mcp.transport.ingress import THREAD_THRESHOLD_BYTES, IngressCheck, too_many_elements
from openexec_mcp.transport.mcp import build_mcp_server, public_envelope
from openexec_mcp.upstream.manager import UpstreamManager

__all__ = ["build_http_app", "http_status"]

logger = logging.getLogger("openexec_mcp.transport.http.app")

_EXECUTE_FIELDS = frozenset({"action", "payload", "nonce", "approval_artifact", "run_id"})
_MAX_VERIFY_BYTES = 1024 * 1024
_MAX_ARTIFACT_BYTES = 16 * 1024

Handler = Callable[[Request], Awaitable[Response]]
TenantHandler = Callable[[Request, "str | None"], Awaitable[Response]]
"""A route handler; the second argument is the bearer token's tenant (``None`` when auth is off)."""

Clock = Callable[[], datetime]
"""Returns the current aware UTC datetime."""


def http_status(answer: Answer) -> int:
    """Map a gate answer to the HTTP status of SPEC §8 ``POST /execute``.

    200 executed/replayed; otherwise the error class's ``http_status`` (403 approval codes, 404
    unknown action, 409 nonce codes, 422 invalid_request, 429 rate_limited, 500 failed and
    internal_error, 503 store_unavailable and shutting_down).
    """
    if answer.status in ("executed", "replayed") or answer.error is None:
        return 200 if answer.status in ("executed", "replayed") else 500
    return answer.error.http_status


def build_http_app(runtime: Runtime, *, host: str, port: int, clock: Clock = utc_now) -> Starlette:
    """Return the Starlette app serving SPEC §8 routes, ``/mcp``, ``/sse`` and ``/messages/``.

    With ``[[auth.tokens]]`` configured, every route but ``/health`` and ``/ready`` needs a bearer
    token with the route's scope, and the token's tenant is the caller's tenant; ``/health``
    then answers liveness only, and its detail to a token with ``read``.

    Args:
        runtime: The started runtime.
        host: The bind address; every loopback bind gets the Host/Origin guard (SPEC §10).
        port: The port (names this server in the SDK's auth settings).
        clock: The routes' clock (aware UTC datetimes).
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
    routes = _Routes(runtime, caller, browser_guard, clock)
    ledger_routes = LedgerRoutes(runtime.ledger, runtime.store, runtime.witnessing)
    for path, methods, scope, limited, handler in (
        ("/", ["GET"], "read", True, routes.index),
        ("/health", ["GET"], None, False, routes.health),
        ("/ready", ["GET"], None, False, routes.ready),
        ("/version", ["GET"], "read", True, routes.version),
        ("/keys", ["GET"], "read", True, routes.keys),
        ("/execute", ["POST"], "execute", False, routes.execute),  # the gate's own rate limit
        ("/receipts/verify", ["POST"], "read", True, routes.verify),
        ("/approvals", ["POST"], "approve", True, routes.submit_approval),
        ("/approvals", ["GET"], "read", True, routes.list_approvals),
        ("/approvals/{request_id}", ["GET"], "read", True, routes.get_approval),
        ("/ledger/checkpoint", ["GET"], "read", True, ledger_routes.checkpoint),
        ("/ledger/proof/{exec_id}", ["GET"], "read", True, ledger_routes.proof),
        ("/ledger/consistency", ["GET"], "read", True, ledger_routes.consistency),
        *grant_routes(runtime),
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


class _Routes:
    def __init__(self, runtime: Runtime, caller: Caller, guard: BrowserGuard, clock: Clock) -> None:
        self.runtime = runtime
        self.caller = caller
        self.guard = guard
        self.clock = clock
        self.keys_document = public_keys_document(runtime.server_key)
        self.public_keys = {runtime.server_key.kid: runtime.server_key.public_key()}

    async def index(self, request: Request, tenant_id: str | None) -> Response:
        return JSONResponse({"service": "openexec-mcp", "version": __version__, "mode": self.runtime.settings.mode})

    async def health(self, request: Request, tenant_id: str | None) -> Response:
        """Liveness for anyone; the detail (mode, policy, ledger size, storage) to a trusted reader.

        The ledger size counts every tenant's receipts: with tokens the detail needs a token with
        ``read``; on a loopback bind it needs a request that passes the Host/Origin guard, so a
        page using DNS rebinding learns only that the process answers. A store outage shows as
        ``store_unavailable`` (the driver's text goes to the log), never as a failed probe.
        """
        runtime = self.runtime
        liveness = JSONResponse({"status": "ok"})
        if self.caller.tokens_configured:
            user = self.caller.user(request)
            if user is None or "read" not in user.scopes:
                return liveness
        if await self.guard.refuse(request) is not None:
            return liveness
        try:
            size: int | None = await anyio.to_thread.run_sync(runtime.store.ledger_size)
            status, store = "ok", "ok"
        except StoreUnavailableError as exc:
            logger.error("store unavailable on /health: %s", exc.message)
            size, status, store = None, "degraded", "store_unavailable"
        signed = any(policy == "signed" for policy in runtime.policy.approvals.values())
        warnings = ["demo mode: every action is approved automatically"] if runtime.settings.mode == "demo" else []
        witnesses = runtime.witnessing.health() if runtime.witnessing is not None else {}  # SPEC §14
        upstreams = {"upstreams": runtime.upstreams.health()} if runtime.upstreams is not None else {}  # SPEC §11
        return JSONResponse(
            {
                **witnesses,
                **upstreams,
                "status": status,
                "store": store,
                "mode": runtime.settings.mode,
                "signature_verification": "on" if signed else "off",
                "policy_hash": runtime.policy.policy_hash,
                "ledger_size": size,
                "storage": runtime.store.kind,
                "server_id": runtime.settings.server_id,
                "kid": runtime.server_key.kid,
                "warnings": warnings,
            }
        )

    async def ready(self, request: Request, tenant_id: str | None) -> Response:
        if self.runtime.gate.draining:
            return JSONResponse({"ready": False, "reason": "shutting_down"}, status_code=503)
        try:
            await anyio.to_thread.run_sync(self.runtime.store.ping)
        except StoreUnavailableError:
            return JSONResponse({"ready": False, "reason": "store_unavailable"}, status_code=503)
        return JSONResponse({"ready": True})

    async def version(self, request: Request, tenant_id: str | None) -> Response:
        return JSONResponse(
            {
                "version": __version__,
                "protocol_versions": [*MODERN_PROTOCOL_VERSIONS, *HANDSHAKE_PROTOCOL_VERSIONS],
                "build": {
                    "python": platform.python_version(),
                    "mcp_sdk": getattr(mcp, "__version__", None) or _dist_version("mcp"),
                },
            }
        )

    async def keys(self, request: Request, tenant_id: str | None) -> Response:
        return JSONResponse(self.keys_document)

    async def execute(self, request: Request, tenant_id: str | None) -> Response:
        """``POST /execute``: the SPEC §6 envelope for every outcome, with the status of SPEC §8.

        Cheap bounds first: the declared and the read body size (4 × ``max_payload_bytes`` +
        4 KiB), then a strict parse that never canonicalizes the whole body (on a worker thread
        past 64 KiB); the payload itself is checked by the gate.
        """
        limits = self.runtime.policy.limits
        action: Any = None
        try:
            limit = 4 * limits["max_payload_bytes"] + 4096
            raw = await _read_body(request, limit)
            if len(raw) > THREAD_THRESHOLD_BYTES:
                body = await anyio.to_thread.run_sync(lambda: parse_json_strict(raw, max_raw_bytes=limit))
            else:
                body = parse_json_strict(raw, max_raw_bytes=limit)
            action, arguments, artifact, run_id = _parse_execute_body(body)
            if len(raw) > limits["max_payload_bytes"] and (
                crowded := too_many_elements(arguments, limits["max_payload_bytes"])
            ):
                raise MalformedInputError(crowded)
        except InvalidRequestError as exc:  # refused before the gate: nothing recorded (SPEC §10)
            return JSONResponse(refusal_envelope(action, exc), status_code=422)
        ctx = CallContext(
            tenant_id=tenant_id or self.runtime.settings.tenant_id,
            run_id=run_id or "http:" + secrets.token_hex(8),  # without a run_id, each request is its own run
            approval_artifact=artifact,
        )
        # Gate.call never raises: an unexpected error comes back as internal_error with a receipt.
        answer = await self.runtime.gate.call(action, arguments, ctx)
        if not isinstance(answer, Answer):  # no elicitor here: the gate cannot ask for input over /execute
            logger.error("the gate asked for input on POST /execute, which cannot elicit")
            refused = InternalError("internal error; the call was not executed")
            answer = Answer(refusal_envelope(action, refused), refused)
        return JSONResponse(public_envelope(answer.envelope), status_code=http_status(answer))

    async def verify(self, request: Request, tenant_id: str | None) -> Response:
        try:
            body = parse_json(await _read_body(request, _MAX_VERIFY_BYTES), max_bytes=_MAX_VERIFY_BYTES)
        except InvalidRequestError as exc:
            return JSONResponse({"valid": False, "reason": "malformed", "message": exc.message, "seq": None}, 422)
        document = json_object(body)
        if document is not None and "payloadType" in document:
            result = await anyio.to_thread.run_sync(self._verify_envelope, document)
        elif document is not None and set(document) == {"exec_id", "result", "receipt"}:
            result = await anyio.to_thread.run_sync(self._verify_legacy, document, tenant_id)
        else:
            result = {"valid": False, "reason": "malformed", "seq": None,
                      "message": "expected a DSSE receipt or {exec_id, result, receipt}"}  # fmt: skip
        return JSONResponse(result)

    async def submit_approval(self, request: Request, tenant_id: str | None) -> Response:
        """Store a signed artifact against its own action_hash (SPEC §5, §10): 201, or the approval code.

        The artifact is verified now (all checks but the action match, which happens at execution)
        so an approver learns at once that it will not work; it is verified again when used.
        """
        try:
            artifact = parse_json(await _read_body(request, _MAX_ARTIFACT_BYTES), max_bytes=_MAX_ARTIFACT_BYTES)
            parsed = parse_approval_artifact(artifact)
            self.runtime.gate.approver.verify(
                artifact,
                action_hash=parsed.action_hash,
                tenant_id=tenant_id or self.runtime.settings.tenant_id,
                now=utc_now(),
            )
        except ApprovalError as exc:
            status = 422 if exc.code == "approval_malformed" else 403
            return JSONResponse({"error": exc.to_dict()}, status_code=status)
        except InvalidRequestError as exc:
            return JSONResponse({"error": {"code": "approval_malformed", "message": exc.message}}, status_code=422)
        stored = await anyio.to_thread.run_sync(
            self.runtime.store.add_approval_artifact, parsed.action_hash, parsed.approval_id,
            canonicalize(artifact).decode(), format_timestamp(utc_now()),
        )  # fmt: skip
        body = {"approval_id": parsed.approval_id, "action_hash": parsed.action_hash, "stored": stored}
        return JSONResponse(body, status_code=201 if stored else 200)

    async def list_approvals(self, request: Request, tenant_id: str | None) -> Response:
        """List pending approval requests as previews, a page at a time (the caller's tenant only with tokens).

        Query: ``limit`` (1-100, default 50) and ``cursor`` (opaque, from ``next_cursor``). Answer
        ``{"approval_requests": [preview, ...], "next_cursor": str | null}``, oldest first. A
        preview's ``action_request`` holds ``action`` and ``nonce``, and ``payload`` when its JSON
        is at most 1 KiB; a larger one is ``payload_preview`` (its start, marked as cut) with
        ``truncated: true``: ``GET /approvals/{request_id}`` has the whole call. 422 on a bad query.
        """
        try:
            limit = _int_param(request.query_params.get("limit"), default=50, low=1, high=100)
            after = _decode_cursor(request.query_params.get("cursor"))
        except ValueError as exc:
            return JSONResponse({"error": {"code": "invalid_request", "message": str(exc)}}, status_code=422)
        page = await anyio.to_thread.run_sync(
            lambda: self.runtime.store.list_approval_requests(
                utc_now().timestamp(), tenant_id, after=after, limit=limit + 1
            )
        )
        more = len(page) > limit
        page = page[:limit]
        cursor = _encode_cursor(page[-1].created_at, page[-1].request_id) if more else None
        return JSONResponse({"approval_requests": [_preview(item) for item in page], "next_cursor": cursor})

    async def get_approval(self, request: Request, tenant_id: str | None) -> Response:
        """One pending request with its whole action request; 404 when unknown, expired or another tenant's."""
        request_id = request.path_params["request_id"]
        item = await anyio.to_thread.run_sync(self.runtime.store.get_approval_request, request_id)
        if (
            item is None
            or (tenant_id is not None and item.tenant_id != tenant_id)
            or (item.expires_unix < utc_now().timestamp())
        ):
            return JSONResponse(
                {"error": {"code": "not_found", "message": "no such pending approval request"}}, status_code=404
            )
        return JSONResponse(_request_json(item, json.loads(item.action_request)))

    def _verify_envelope(self, envelope: dict[str, Any]) -> dict[str, Any]:
        """Signature, then inclusion: the ledger holds this exact receipt at its ``seq``."""
        try:
            body = verify_receipt(envelope, self.public_keys)
            leaf = receipt_hash(envelope)
        except (VerificationError, MalformedInputError) as exc:
            reason = exc.reason if isinstance(exc, VerificationError) else "malformed"
            return {"valid": False, "reason": reason, "message": exc.message, "seq": None}
        seq = body["seq"]
        entry = self.runtime.store.get_entry_at(seq) if isinstance(seq, int) else None
        if entry is None or entry.receipt_hash != leaf:
            return {"valid": False, "reason": "not_in_ledger", "message": "the ledger does not hold this receipt",
                    "seq": seq}  # fmt: skip
        return {"valid": True, "reason": None, "seq": seq, "exec_id": body["exec_id"], "status": body["status"]}

    def _verify_legacy(self, claim: dict[str, Any], tenant_id: str | None) -> dict[str, Any]:
        """Legacy ``{exec_id, result, receipt}``: valid only if the ledger holds exactly that.

        With tokens, another tenant's exec_id answers exactly like an unknown one: the claim
        names no receipt the caller holds, so any other answer would be an oracle.
        """
        exec_id, result, claimed_hash = claim["exec_id"], claim["result"], claim["receipt"]
        entry = self.runtime.store.get_entry(exec_id) if isinstance(exec_id, str) else None
        if entry is None or (tenant_id is not None and entry.tenant_id != tenant_id):
            return {"valid": False, "reason": "unknown_exec_id", "seq": None}
        if claimed_hash != entry.receipt_hash:
            return {"valid": False, "reason": "receipt_mismatch", "seq": entry.seq}
        body = verify_receipt(parse_json(entry.envelope, max_bytes=_MAX_VERIFY_BYTES), self.public_keys)
        try:
            result_hash = sha256_hex(canonicalize(result))
        except MalformedInputError:
            return {"valid": False, "reason": "result_mismatch", "seq": entry.seq}
        if body["result_hash"] is None or body["result_hash"] != result_hash:
            return {"valid": False, "reason": "result_mismatch", "seq": entry.seq}
        return {"valid": True, "reason": None, "seq": entry.seq}


_PREVIEW_PAYLOAD_BYTES = 1024
_PREVIEW_CHARS = 256


def _request_json(item: ApprovalRequest, action_request: dict[str, Any]) -> dict[str, Any]:
    return {
        "request_id": item.request_id,
        "tenant_id": item.tenant_id,
        "action_hash": item.action_hash,
        "action_request": action_request,
        "created_at": item.created_at,
        "expires_at": item.expires_at,
    }


def _preview(item: ApprovalRequest) -> dict[str, Any]:
    """Return a listing entry: the call's action and nonce, its payload whole when small, else visibly cut."""
    full: dict[str, Any] = json.loads(item.action_request)
    payload_text = canonicalize(full.get("payload")).decode("utf-8")
    shown: dict[str, Any] = {"action": full.get("action"), "nonce": full.get("nonce")}
    if len(payload_text.encode("utf-8")) <= _PREVIEW_PAYLOAD_BYTES:
        shown["payload"] = full.get("payload")
        return {**_request_json(item, shown), "truncated": False}
    rest = len(payload_text) - _PREVIEW_CHARS
    shown["payload_preview"] = f"{payload_text[:_PREVIEW_CHARS]}… [{rest} more characters]"
    return {**_request_json(item, shown), "truncated": True}


def _int_param(text: str | None, *, default: int, low: int, high: int) -> int:
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise ValueError(f"limit must be an integer from {low} to {high}")
    return int(text)


def _encode_cursor(created_at: str, request_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created_at, request_id]).encode()).decode().rstrip("=")


def _decode_cursor(text: str | None) -> tuple[str, str] | None:
    """Decode an opaque ``cursor``; ``ValueError`` when it is not one this server made."""
    if text is None:
        return None
    try:
        decoded = json.loads(b64decode_strict(text))
    except (ValueError, MalformedInputError):
        raise ValueError("cursor is not valid") from None
    if not (isinstance(decoded, list) and len(decoded) == 2 and all(isinstance(v, str) for v in decoded)):  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
        raise ValueError("cursor is not valid")
    return str(decoded[0]), str(decoded[1])  # pyright: ignore[reportUnknownArgumentType]


def _parse_execute_body(body: Any) -> tuple[str, dict[str, Any], Any, str | None]:
    if not isinstance(body, dict):
        raise MalformedInputError("body must be a JSON object {action, payload, nonce, approval_artifact?}")
    fields: dict[str, Any] = body  # pyright: ignore[reportUnknownVariableType]
    unknown = sorted(set(fields) - _EXECUTE_FIELDS)
    if unknown:
        raise MalformedInputError(f"unknown field(s) in body: {', '.join(unknown)[:200]}")
    action, payload = fields.get("action"), fields.get("payload", {})
    if not isinstance(action, str):
        raise MalformedInputError("'action' must be a string")
    if not isinstance(payload, dict):
        raise MalformedInputError("'payload' must be a JSON object")
    if "nonce" in payload:
        raise MalformedInputError("'nonce' goes beside 'payload', not inside it")
    run_id = fields.get("run_id")
    if run_id is not None:
        run_id = parse_run_id(run_id)
    arguments: dict[str, Any] = {**payload, "nonce": fields.get("nonce")}  # pyright: ignore[reportUnknownArgumentType]
    return action, arguments, fields.get("approval_artifact"), run_id


async def _read_body(request: Request, limit: int) -> bytes:
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


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None
