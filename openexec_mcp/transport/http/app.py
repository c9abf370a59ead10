"""The HTTP surface of SPEC §8, in the same process and Starlette app as the MCP HTTP transports.

``build_http_app`` serves the plain routes below, streamable HTTP MCP at ``/mcp`` and legacy SSE
MCP at ``/sse`` + ``/messages/``. Handlers never let an exception reach the client: every
refusal is a JSON body with a stable code.
"""

from __future__ import annotations

import base64
import json
import logging
import platform
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread
import mcp
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from openexec_mcp import __version__
from openexec_mcp.core.action import parse_run_id
from openexec_mcp.core.approval import parse_approval_artifact
from openexec_mcp.core.canonical import canonicalize, json_object, parse_json, sha256_hex
from openexec_mcp.core.clock import format_timestamp, utc_now
from openexec_mcp.core.receipt import receipt_hash, verify_receipt
from openexec_mcp.errors import (
    ApprovalError,
    InvalidRequestError,
    MalformedInputError,
    NonceError,
    OpenExecError,
    RateLimitedError,
    ShuttingDownError,
    StoreUnavailableError,
    UnknownActionError,
    VerificationError,
)
from openexec_mcp.gate.envelope import refusal_envelope
from openexec_mcp.gate.pipeline import Answer, CallContext
from openexec_mcp.keystore import public_keys_document
from openexec_mcp.runtime import Runtime
from openexec_mcp.store.base import ApprovalRequest
from openexec_mcp.transport.auth import TokenTable, auth_settings, require_scope
from openexec_mcp.transport.http.grant_routes import grant_routes
from openexec_mcp.transport.http.ledger_routes import LedgerRoutes
from openexec_mcp.transport.mcp import build_mcp_server

__all__ = ["build_http_app", "http_status"]

logger = logging.getLogger("openexec_mcp.transport.http.app")

_EXECUTE_FIELDS = frozenset({"action", "payload", "nonce", "approval_artifact", "run_id"})
_MAX_VERIFY_BYTES = 1024 * 1024
_MAX_ARTIFACT_BYTES = 16 * 1024

Handler = Callable[[Request], Awaitable[Response]]
TenantHandler = Callable[[Request, "str | None"], Awaitable[Response]]
"""A route handler; the second argument is the bearer token's tenant (``None`` when auth is off)."""


def http_status(answer: Answer) -> int:
    """Map a gate answer to the HTTP status of SPEC §8 ``POST /execute``: the error class's ``http_status``."""
    if answer.status in ("executed", "replayed"):
        return 200
    error = answer.error
    if error is None:
        return 500
    return error.http_status
    error = answer.error
    if isinstance(error, UnknownActionError):
        return 404
    if isinstance(error, InvalidRequestError):
        return 422
    if isinstance(error, ApprovalError):
        return 403
    if isinstance(error, NonceError):
        return 409
    if isinstance(error, (StoreUnavailableError, ShuttingDownError)):
        return 503
    if isinstance(error, RateLimitedError):
        return 429
    return 500


def build_http_app(runtime: Runtime, *, host: str, port: int) -> Starlette:
    """Return the Starlette app serving SPEC §8 routes, ``/mcp``, ``/sse`` and ``/messages/``.

    With ``[[auth.tokens]]`` configured, every route but ``/health`` and ``/ready`` needs a bearer
    token with the route's scope, and the token's tenant is the caller's tenant.

    Args:
        runtime: The started runtime.
        host: The bind address; on loopback the SDK's DNS-rebinding protection is on.
        port: The port (names this server in the SDK's auth settings).
    """
    tokens = TokenTable(runtime.settings.auth.tokens)
    default_tenant = runtime.settings.tenant_id

    def tenant_for(_ctx: Any) -> str:
        token = get_access_token()
        return token.client_id if token is not None else default_tenant

    mcp_server = build_mcp_server(
        runtime.gate,
        tenant_for,
        token_verifier=tokens if tokens else None,
        auth=auth_settings(host, port) if tokens else None,
        request_state_keys=[key.get_secret_value() for key in runtime.settings.mcp.request_state_keys],
        request_state_ttl_seconds=runtime.settings.mcp.request_state_ttl_seconds,
    )
    browser_guard = _loopback_guard(host)
    routes = _Routes(runtime)
    ledger_routes = LedgerRoutes(runtime.ledger, runtime.store, runtime.witnessing)
    for path, methods, scope, handler in (
        ("/", ["GET"], "read", routes.index),
        ("/health", ["GET"], None, routes.health),
        ("/ready", ["GET"], None, routes.ready),
        ("/version", ["GET"], "read", routes.version),
        ("/keys", ["GET"], "read", routes.keys),
        ("/execute", ["POST"], "execute", routes.execute),
        ("/receipts/verify", ["POST"], "read", routes.verify),
        ("/approvals", ["POST"], "approve", routes.submit_approval),
        ("/approvals", ["GET"], "read", routes.list_approvals),
        ("/approvals/{request_id}", ["GET"], "read", routes.get_approval),
        ("/ledger/checkpoint", ["GET"], "read", ledger_routes.checkpoint),
        ("/ledger/proof/{exec_id}", ["GET"], "read", ledger_routes.proof),
        ("/ledger/consistency", ["GET"], "read", ledger_routes.consistency),
        *grant_routes(runtime),
    ):
        guard = browser_guard if scope is not None else None  # probes on /health, /ready stay open
        mcp_server.custom_route(path, methods=methods)(_guarded(handler, tokens, scope, guard))
    app = mcp_server.streamable_http_app(host=host)
    app.router.routes.extend(mcp_server.sse_app(host=host).routes)
    return app


def _loopback_guard(host: str) -> TransportSecurityMiddleware | None:
    """Return the Host/Origin check for a loopback bind, or ``None`` for any other bind.

    On loopback (where no token is required) a web page the user visits could otherwise drive
    the server: a cross-site ``POST /execute`` is a "simple" request that browsers send without a
    CORS preflight, and DNS rebinding lets a page read the answers. So, as the SDK already does for
    ``/mcp`` and ``/sse``: the Host must be a loopback name, and a request that carries an Origin
    (browsers always send one on a cross-site POST; curl and SDK clients send none) must come from
    a loopback origin. Content-Type is not checked, so plain ``curl -d`` keeps working. Other binds
    require bearer tokens, which browsers never attach on their own.
    """
    if host not in ("127.0.0.1", "localhost", "::1"):
        return None
    loopback = ["127.0.0.1", "localhost", "[::1]"]
    return TransportSecurityMiddleware(
        TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=[*loopback, *(f"{name}:*" for name in loopback)],
            allowed_origins=[f"http://{name}:*" for name in loopback] + [f"http://{name}" for name in loopback],
        )
    )


def _guarded(
    handler: TenantHandler, tokens: TokenTable, scope: str | None, guard: TransportSecurityMiddleware | None
) -> Handler:
    """Check Host/Origin (loopback), then the bearer token's scope, then run the handler; never raise."""

    async def wrapped(request: Request) -> Response:
        if guard is not None and (refused := await guard.validate_request(request, is_post=False)) is not None:
            return JSONResponse(
                {"error": {"code": "forbidden", "message": "cross-site or rebound request refused"}},
                status_code=refused.status_code,
            )
        tenant_id: str | None = None
        if scope is not None:
            tenant_id, refusal = require_scope(request, tokens, scope)
            if refusal is not None:
                return refusal
        try:
            return await handler(request, tenant_id)
        except OpenExecError as exc:
            return JSONResponse(
                {"error": exc.to_dict()}, status_code=503 if isinstance(exc, StoreUnavailableError) else 422
            )
        except Exception:
            logger.exception("internal error on %s %s", request.method, request.url.path)
            return JSONResponse({"error": {"code": "internal_error", "message": "internal error"}}, status_code=500)

    wrapped.__name__ = handler.__name__
    return wrapped


class _Routes:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.keys_document = public_keys_document(runtime.server_key)
        self.public_keys = {runtime.server_key.kid: runtime.server_key.public_key()}

    async def index(self, request: Request, tenant_id: str | None) -> Response:
        return JSONResponse({"service": "openexec-mcp", "version": __version__, "mode": self.runtime.settings.mode})

    async def health(self, request: Request, tenant_id: str | None) -> Response:
        runtime = self.runtime
        size = await anyio.to_thread.run_sync(runtime.store.ledger_size)
        signed = any(policy == "signed" for policy in runtime.policy.approvals.values())
        warnings = ["demo mode: every action is approved automatically"] if runtime.settings.mode == "demo" else []
        witnesses = runtime.witnessing.health() if runtime.witnessing is not None else {}  # SPEC §14
        return JSONResponse(
            {
                **witnesses,
                "status": "ok",
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
        limits = self.runtime.policy.limits
        try:
            body = parse_json(
                await _read_body(request, 4 * limits["max_payload_bytes"] + 4096),
                max_depth=limits["max_depth"] + 2,
                max_bytes=4 * limits["max_payload_bytes"] + 4096,
            )
            action, arguments, artifact, run_id = _parse_execute_body(body)
        except InvalidRequestError as exc:
            return JSONResponse(refusal_envelope(None, exc), status_code=422)
        ctx = CallContext(
            tenant_id=tenant_id or self.runtime.settings.tenant_id,
            run_id=run_id or "http:" + secrets.token_hex(8),  # without a run_id, each request is its own run
            approval_artifact=artifact,
        )
        answer = await self.runtime.gate.call(action, arguments, ctx)
        if not isinstance(answer, Answer):  # no elicitor here: the gate never asks for input over /execute
            raise TypeError("the gate asked for input on a transport without elicitation")
        return JSONResponse(answer.envelope, status_code=http_status(answer))

    async def verify(self, request: Request, tenant_id: str | None) -> Response:
        try:
            body = parse_json(await _read_body(request, _MAX_VERIFY_BYTES), max_bytes=_MAX_VERIFY_BYTES)
        except InvalidRequestError as exc:
            return JSONResponse({"valid": False, "reason": "malformed", "message": exc.message, "seq": None}, 422)
        document = json_object(body)
        if document is not None and "payloadType" in document:
            result = await anyio.to_thread.run_sync(self._verify_envelope, document)
        elif document is not None and set(document) == {"exec_id", "result", "receipt"}:
            result = await anyio.to_thread.run_sync(self._verify_legacy, document)
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
        if item is None or (tenant_id is not None and item.tenant_id != tenant_id) or (
            item.expires_unix < utc_now().timestamp()
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

    def _verify_legacy(self, claim: dict[str, Any]) -> dict[str, Any]:
        """Legacy ``{exec_id, result, receipt}``: valid only if the ledger holds exactly that."""
        exec_id, result, claimed_hash = claim["exec_id"], claim["result"], claim["receipt"]
        entry = self.runtime.store.get_entry(exec_id) if isinstance(exec_id, str) else None
        if entry is None:
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
        decoded = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except ValueError:
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
