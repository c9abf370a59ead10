"""The service routes of SPEC §8: index, probes, version, keys, execute and receipt verification.

``/``, ``/health``, ``/ready``, ``/version``, ``/keys``, ``POST /execute`` and ``POST
/receipts/verify``:

- ``POST /execute`` answers the SPEC §6 envelope for every outcome, with the status of
  :func:`http_status`; a body refused before the gate (size, parse, shape) is a 422 envelope and
  records nothing (SPEC §10).
- ``POST /receipts/verify`` checks a DSSE receipt (signature, then inclusion at its ``seq``) or a
  legacy ``{exec_id, result, receipt}`` claim against the ledger: ``{"valid", "reason", "seq",
  ...}`` with a stable ``reason`` (:data:`~openexec_mcp.errors.VerificationReason`).
- ``/health`` and ``/ready`` are the probes: open to any Host, ``/health`` shows its detail only
  to a trusted reader.

The handlers take ``(request, tenant_id)``; ``build_http_app`` wraps each with the browser guard,
the bearer scope and the rate limit of its row in the route table.
"""

from __future__ import annotations

import logging
import platform
import secrets
from typing import Any

import anyio.to_thread
import mcp
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from openexec_mcp import __version__
from openexec_mcp.core.action import parse_run_id
from openexec_mcp.core.canonical import canonicalize, json_object, parse_json, parse_json_strict, sha256_hex
from openexec_mcp.core.receipt import receipt_hash, verify_receipt
from openexec_mcp.errors import (
    InternalError,
    InvalidRequestError,
    MalformedInputError,
    StoreUnavailableError,
    VerificationError,
)
from openexec_mcp.gate.envelope import refusal_envelope
from openexec_mcp.gate.pipeline import Answer, CallContext
from openexec_mcp.keystore import public_keys_document
from openexec_mcp.runtime import Runtime
from openexec_mcp.transport.http.guards import BrowserGuard, Caller, read_body
from openexec_mcp.transport.ingress import THREAD_THRESHOLD_BYTES, too_many_elements
from openexec_mcp.transport.mcp import public_envelope

__all__ = ["Routes", "http_status"]

logger = logging.getLogger("openexec_mcp.transport.http.app")  # the HTTP surface's one logger, as before the split

_EXECUTE_FIELDS = frozenset({"action", "payload", "nonce", "approval_artifact", "run_id"})
_MAX_VERIFY_BYTES = 1024 * 1024


def http_status(answer: Answer) -> int:
    """Map a gate answer to the HTTP status of SPEC §8 ``POST /execute``.

    200 executed/replayed; otherwise the error class's ``http_status`` (403 approval codes, 404
    unknown action, 409 nonce codes, 422 invalid_request, 429 rate_limited, 500 failed and
    internal_error, 503 store_unavailable and shutting_down).
    """
    if answer.status in ("executed", "replayed") or answer.error is None:
        return 200 if answer.status in ("executed", "replayed") else 500
    return answer.error.http_status


class Routes:
    """Handlers ``(request, tenant_id) -> Response`` for the routes above.

    Args:
        runtime: The started runtime (its gate executes, its store and server key verify).
        caller: Who is calling (``/health`` reads the token's scopes itself).
        guard: The browser guard (``/health`` applies it itself: it is open to any Host).
    """

    def __init__(self, runtime: Runtime, caller: Caller, guard: BrowserGuard) -> None:
        self.runtime = runtime
        self.caller = caller
        self.guard = guard
        self.keys_document = public_keys_document(runtime.server_key)
        self.public_keys = {runtime.server_key.kid: runtime.server_key.public_key()}

    async def index(self, request: Request, tenant_id: str | None) -> Response:
        """``GET /``: ``{"service": "openexec-mcp", "version": str, "mode": "demo" | "clawshield"}``."""
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
        """Readiness: 200 ``{"ready": true}``, else 503 with ``reason`` ``shutting_down`` or ``store_unavailable``."""
        if self.runtime.gate.draining:
            return JSONResponse({"ready": False, "reason": "shutting_down"}, status_code=503)
        try:
            await anyio.to_thread.run_sync(self.runtime.store.ping)
        except StoreUnavailableError:
            return JSONResponse({"ready": False, "reason": "store_unavailable"}, status_code=503)
        return JSONResponse({"ready": True})

    async def version(self, request: Request, tenant_id: str | None) -> Response:
        """``{"version", "protocol_versions": [str, ...], "build": {"python", "mcp_sdk"}}``."""
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
        """``GET /keys``: the server's public receipt keys (:func:`~openexec_mcp.keystore.public_keys_document`)."""
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
            raw = await read_body(request, limit)
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
        """``POST /receipts/verify``: a DSSE receipt or a legacy claim, checked against the ledger.

        Answers 200 ``{"valid": bool, "reason": str | None, "seq": int | None, ...}`` (a DSSE
        receipt that verifies adds ``exec_id`` and ``status``); 422 ``reason: malformed`` when the
        body is not JSON or over 1 MiB.
        """
        try:
            body = parse_json(await read_body(request, _MAX_VERIFY_BYTES), max_bytes=_MAX_VERIFY_BYTES)
        except InvalidRequestError as exc:
            return JSONResponse({"valid": False, "reason": "malformed", "message": exc.message, "seq": None}, 422)
        document = json_object(body)
        if document is not None and "payloadType" in document:
            result = await anyio.to_thread.run_sync(self._verify_envelope, document)
        elif document is not None and set(document) == {"exec_id", "result", "receipt"}:
            result = await anyio.to_thread.run_sync(self._verify_legacy, document, tenant_id)
        else:
            result = {
                "valid": False,
                "reason": "malformed",
                "seq": None,
                "message": "expected a DSSE receipt or {exec_id, result, receipt}",
            }
        return JSONResponse(result)

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
            return {
                "valid": False,
                "reason": "not_in_ledger",
                "message": "the ledger does not hold this receipt",
                "seq": seq,
            }
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


def _parse_execute_body(body: Any) -> tuple[str, dict[str, Any], Any, str | None]:
    """Split a ``POST /execute`` body into ``(action, arguments, approval_artifact, run_id)``.

    ``arguments`` is the payload with the ``nonce`` beside it, as the gate takes a tools/call's.

    Raises:
        MalformedInputError: The body is not ``{action, payload?, nonce?, approval_artifact?,
            run_id?}`` with a string action and an object payload.
    """
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


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None
