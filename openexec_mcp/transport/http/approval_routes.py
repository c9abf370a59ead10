"""``POST /approvals``, ``GET /approvals`` and ``GET /approvals/{request_id}`` (SPEC §5, §8).

- ``POST /approvals`` stores a signed approval artifact against its own ``action_hash``, verified
  now (every check but the action match, which happens at execution) and again when used.
- ``GET /approvals`` lists the pending approval requests a page at a time, each as a preview that
  never carries a large payload whole; the page cursor is opaque to the caller.
- ``GET /approvals/{request_id}`` answers one pending request with its whole action request.

With ``[[auth.tokens]]`` each route sees only the caller's tenant; another tenant's request
answers exactly like an unknown one (404). Every answer is JSON with a stable code.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from openexec_mcp.core.approval import parse_approval_artifact
from openexec_mcp.core.canonical import canonicalize, parse_json
from openexec_mcp.core.clock import format_timestamp
from openexec_mcp.core.encoding import b64decode_strict
from openexec_mcp.errors import ApprovalError, InvalidRequestError, MalformedInputError
from openexec_mcp.runtime import Runtime
from openexec_mcp.store.base import ApprovalRequest
from openexec_mcp.transport.http.guards import read_body

__all__ = ["ApprovalRoutes"]

_MAX_ARTIFACT_BYTES = 16 * 1024
_PREVIEW_PAYLOAD_BYTES = 1024
_PREVIEW_CHARS = 256


class ApprovalRoutes:
    """Handlers ``(request, tenant_id) -> Response`` for the routes above.

    Args:
        runtime: The server runtime (its approver verifies, its store keeps artifacts and requests).
        clock: Returns the current aware UTC datetime (artifact checks, request expiry, timestamps).
    """

    def __init__(self, runtime: Runtime, clock: Callable[[], datetime]) -> None:
        self.runtime = runtime
        self.clock = clock

    async def submit(self, request: Request, tenant_id: str | None) -> Response:
        """Store a signed artifact against its own action_hash (SPEC §5, §10): 201, or the approval code.

        The artifact is verified now (all checks but the action match, which happens at execution)
        so an approver learns at once that it will not work; it is verified again when used.
        Answers 201 ``{approval_id, action_hash, stored: true}``, 200 with ``stored: false`` when
        already stored, 422 ``approval_malformed`` or 403 with the failed check's code.
        """
        try:
            artifact = parse_json(await read_body(request, _MAX_ARTIFACT_BYTES), max_bytes=_MAX_ARTIFACT_BYTES)
            parsed = parse_approval_artifact(artifact)
            self.runtime.gate.approver.verify(
                artifact,
                action_hash=parsed.action_hash,
                tenant_id=tenant_id or self.runtime.settings.tenant_id,
                now=self.clock(),
            )
        except ApprovalError as exc:
            status = 422 if exc.code == "approval_malformed" else 403
            return JSONResponse({"error": exc.to_dict()}, status_code=status)
        except InvalidRequestError as exc:
            return JSONResponse({"error": {"code": "approval_malformed", "message": exc.message}}, status_code=422)
        stored = await anyio.to_thread.run_sync(
            self.runtime.store.add_approval_artifact,
            parsed.action_hash,
            parsed.approval_id,
            canonicalize(artifact).decode(),
            format_timestamp(self.clock()),
        )
        body = {"approval_id": parsed.approval_id, "action_hash": parsed.action_hash, "stored": stored}
        return JSONResponse(body, status_code=201 if stored else 200)

    async def list(self, request: Request, tenant_id: str | None) -> Response:
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
        now = self.clock().timestamp()
        page = await anyio.to_thread.run_sync(
            lambda: self.runtime.store.list_approval_requests(now, tenant_id, after=after, limit=limit + 1)
        )
        more = len(page) > limit
        page = page[:limit]
        cursor = _encode_cursor(page[-1].created_at, page[-1].request_id) if more else None
        return JSONResponse({"approval_requests": [_preview(item) for item in page], "next_cursor": cursor})

    async def get(self, request: Request, tenant_id: str | None) -> Response:
        """One pending request with its whole action request; 404 when unknown, expired or another tenant's."""
        request_id = request.path_params["request_id"]
        item = await anyio.to_thread.run_sync(self.runtime.store.get_approval_request, request_id)
        if (
            item is None
            or (tenant_id is not None and item.tenant_id != tenant_id)
            or (item.expires_unix < self.clock().timestamp())
        ):
            return JSONResponse(
                {"error": {"code": "not_found", "message": "no such pending approval request"}}, status_code=404
            )
        return JSONResponse(_request_json(item, json.loads(item.action_request)))


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
