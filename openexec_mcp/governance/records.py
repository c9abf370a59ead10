"""What the governance service handles: pending approval requests, decisions, and the refusal of one.

A :class:`PendingRequest` comes from a watched server's ``GET /approvals`` listing or
``GET /approvals/{id}``, or from a server's push (``POST /v1/approval-requests``, SPEC §13); all
three answer the same shape, read by :func:`pending_from`. Its action_hash is what the server
says; :attr:`PendingRequest.recomputed_hash` is what the console signs against (SPEC §3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from openexec_mcp.core.action import compute_action_hash

__all__ = ["Decision", "DecisionError", "PendingRequest", "pending_from"]


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """A pending approval request as the console shows it.

    Attributes:
        source: ``"s<index>"`` for a watched server, ``"push"`` for one pushed by a server (seed API).
        request_id: The server's request id.
        tenant_id: The call's tenant.
        action_hash: What the server says the hash is (recomputed before signing).
        action_request: The whole action request, or the listing's preview when ``complete`` is false.
        created_at: RFC 3339.
        expires_at: RFC 3339.
        complete: The action request is whole (not a listing preview).
    """

    source: str
    request_id: str
    tenant_id: str
    action_hash: str
    action_request: Mapping[str, Any]
    created_at: str
    expires_at: str
    complete: bool = True

    @property
    def recomputed_hash(self) -> str | None:
        """The action_hash recomputed from the action request, or ``None`` when it is not a valid one."""
        request = self.action_request
        action, payload, nonce = request.get("action"), request.get("payload"), request.get("nonce")
        if set(request) != {"action", "payload", "nonce"} or not isinstance(action, str):
            return None
        if not isinstance(payload, dict) or not isinstance(nonce, str):
            return None
        try:
            return compute_action_hash(action, payload, nonce)  # pyright: ignore[reportUnknownArgumentType]
        except Exception:  # a value JCS cannot encode: no hash, so no signature
            return None

    @property
    def hash_matches(self) -> bool:
        """Return whether the recomputed hash is the one the server announced."""
        return self.recomputed_hash == self.action_hash


@dataclass(frozen=True, slots=True)
class Decision:
    """One decision in the history (and one line of the decision journal)."""

    at: str
    approver: str
    kind: str  # approve | grant | reject | revoke
    source: str
    request_id: str
    tenant_id: str
    action: str
    action_hash: str
    artifact_id: str
    detail: str
    delivered: str


class DecisionError(Exception):
    """A decision that cannot be signed or delivered; ``message`` is shown to the approver."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def pending_from(source: str, item: Mapping[str, Any], *, complete: bool) -> PendingRequest:
    """Read one pending request in the shape of ``GET /approvals/{id}`` (SPEC §13).

    Args:
        source: What :attr:`PendingRequest.source` is to be.
        item: ``{request_id, tenant_id, action_hash, action_request, created_at, expires_at}``.
        complete: Whether ``action_request`` is whole (not a listing preview).

    Raises:
        TypeError: ``item`` is not an object.
        KeyError: A member is missing.
        ValueError: ``action_request`` is not an object, or another member not a string.
    """
    request = item["action_request"]
    if not isinstance(request, dict):
        raise ValueError("action_request must be an object")
    for name in ("request_id", "tenant_id", "action_hash", "created_at", "expires_at"):
        if not isinstance(item[name], str):
            raise ValueError(f"{name} must be a string")
    return PendingRequest(
        source=source,
        request_id=item["request_id"],
        tenant_id=item["tenant_id"],
        action_hash=item["action_hash"],
        action_request=request,  # pyright: ignore[reportUnknownArgumentType]
        created_at=item["created_at"],
        expires_at=item["expires_at"],
        complete=complete,
    )
