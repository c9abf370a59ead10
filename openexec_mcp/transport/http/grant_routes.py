"""``POST /grants``, ``POST /grants/{grant_id}/revoke`` and ``GET /grants`` (SPEC §13).

A grant is verified when submitted (every check of SPEC §5 but the action match, which happens
per call) so an approver learns at once that it will not work; it is verified again on each use.
Revocation needs the ``approve`` scope of the grant's tenant and no signature: it only takes
authority away. Every answer is JSON with a stable code.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from openexec_mcp.core.canonical import canonicalize, parse_json
from openexec_mcp.core.clock import format_timestamp, utc_now
from openexec_mcp.errors import ApprovalError, InvalidRequestError, MalformedInputError
from openexec_mcp.runtime import Runtime
from openexec_mcp.store.grants import StoredGrant
from openexec_mcp.transport.http.guards import read_body

__all__ = ["GrantRoutes", "grant_json", "grant_routes"]

_MAX_GRANT_BYTES = 32 * 1024


def grant_json(row: StoredGrant) -> dict[str, Any]:
    """Return the public view of a stored grant.

    Returns:
        ``{grant_id, tenant_id, max_uses, uses, expires_at, revoked_at, grant}``.
    """
    return {
        "grant_id": row.grant_id,
        "tenant_id": row.tenant_id,
        "max_uses": row.max_uses,
        "uses": row.uses,
        "expires_at": row.expires_at,
        "revoked_at": row.revoked_at,
        "grant": json.loads(row.artifact),
    }


def grant_routes(
    runtime: Runtime, clock: Callable[[], datetime] = utc_now
) -> list[tuple[str, list[str], str, bool, Any]]:
    """Return ``(path, methods, scope, rate_limited, handler)`` of the SPEC §13 grant routes, for ``build_http_app``."""
    routes = GrantRoutes(runtime, clock)
    return [
        ("/grants", ["POST"], "approve", True, routes.submit),
        ("/grants", ["GET"], "read", True, routes.list),
        ("/grants/{grant_id}/revoke", ["POST"], "approve", True, routes.revoke),
    ]


class GrantRoutes:
    """The grant routes of one server process.

    Args:
        runtime: The server runtime (its approver verifies, its store keeps the grants).
        clock: Returns the current aware UTC datetime (grant checks, submission and revocation times).
    """

    def __init__(self, runtime: Runtime, clock: Callable[[], datetime] = utc_now) -> None:
        self.runtime = runtime
        self.clock = clock

    def _tenant(self, tenant_id: str | None) -> str:
        return tenant_id or self.runtime.settings.tenant_id

    async def submit(self, request: Request, tenant_id: str | None) -> Response:
        """Store a signed grant: 201 ``{grant_id, stored: true}``, 200 when already stored, 422/403 with the code."""
        try:
            body = await read_body(request, _MAX_GRANT_BYTES)
            grant = parse_json(body, max_bytes=_MAX_GRANT_BYTES)
            parsed, verified = self.runtime.gate.approver.verify_grant(
                grant, tenant_id=self._tenant(tenant_id), now=self.clock()
            )
        except ApprovalError as exc:
            status = 422 if exc.code == "approval_malformed" else 403
            return JSONResponse({"error": exc.to_dict()}, status_code=status)
        except (InvalidRequestError, MalformedInputError) as exc:
            return JSONResponse({"error": {"code": "approval_malformed", "message": exc.message}}, status_code=422)
        skew = timedelta(seconds=self.runtime.settings.approvals.clock_skew_seconds)
        usable_until = format_timestamp(verified.expires_at + skew)
        row = StoredGrant(
            grant_id=parsed.grant_id,
            tenant_id=parsed.tenant_id,
            artifact=canonicalize(grant).decode(),
            max_uses=parsed.max_uses,
            uses=0,
            expires_at=usable_until,
            keep_until=usable_until,
            submitted_at=format_timestamp(self.clock()),
            revoked_at=None,
        )
        stored = await anyio.to_thread.run_sync(self.runtime.store.add_grant, row)
        return JSONResponse({"grant_id": parsed.grant_id, "stored": stored}, status_code=201 if stored else 200)

    async def revoke(self, request: Request, tenant_id: str | None) -> Response:
        """End a grant at once (idempotent): 200 with the grant's view, 404 when unknown or another tenant's."""
        grant_id = request.path_params["grant_id"]
        row = await anyio.to_thread.run_sync(
            self.runtime.store.revoke_grant, grant_id, self._tenant(tenant_id), format_timestamp(self.clock())
        )
        if row is None:
            return JSONResponse({"error": {"code": "not_found", "message": "no such grant"}}, status_code=404)
        return JSONResponse(grant_json(row))

    async def list(self, request: Request, tenant_id: str | None) -> Response:
        """List the caller's tenant's grants not yet expired, newest first: ``{"grants": [view, ...]}``."""
        rows = await anyio.to_thread.run_sync(
            self.runtime.store.grants_for, self._tenant(tenant_id), format_timestamp(self.clock())
        )
        return JSONResponse({"grants": [grant_json(row) for row in rows]})
