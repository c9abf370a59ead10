"""Approval artifacts (SPEC §5): parser, signed bytes, and the verifier of the SPEC order.

The parser takes untrusted artifacts; the verifier runs the checks of SPEC §5 in their order.

An approval artifact is a JSON object::

    {"approval_id": "…", "action_hash": "<64 hex>", "issued_by": "clawshield",
     "issued_at": "2026-11-21T10:00:00Z", "expires_at": "2026-11-21T10:05:00Z",
     "tenant_id": "acme", "audience": "<server_id>", "kid": "gov-2026-11",
     "signature": "<base64>"}

``audience`` and ``kid`` are optional. The signed bytes are the DSSE pre-authentication encoding
(PAE) of the RFC 8785 canonical JSON of every member except ``signature``, under the type
``application/vnd.openexec.approval+json``: every member that was sent is signed, and the JCS
encoding leaves no room for moving bytes between fields.

The checks shared with grants (SPEC §13) are in :mod:`openexec_mcp.core.artifact`.

Nothing here reads the clock, the network or a database: the caller passes ``now`` and the
keyring. Whether an ``approval_id`` has already executed (``approval_consumed``) is the store's
check, made after this one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from openexec_mcp.core.artifact import (
    MAX_FIELD_CHARS,
    check_identifiers,
    check_members,
    parse_validity,
    seal,
    verify_signed,
)
from openexec_mcp.core.canonical import canonicalize
from openexec_mcp.core.clock import shift
from openexec_mcp.core.encoding import b64encode, pae
from openexec_mcp.core.keyring import Keyring, KeyringEntry
from openexec_mcp.core.receipt import ReceiptApproval
from openexec_mcp.errors import ApprovalActionMismatchError, ApprovalMalformedError

__all__ = [
    "APPROVAL_PAYLOAD_TYPE",
    "DECISIONS",
    "MAX_FIELD_CHARS",
    "MAX_REASON_CHARS",
    "OPTIONAL_FIELDS",
    "REQUIRED_FIELDS",
    "ApprovalArtifact",
    "VerifiedApproval",
    "approval_signing_input",
    "parse_approval_artifact",
    "sign_approval",
    "verify_approval",
]

APPROVAL_PAYLOAD_TYPE: Final = "application/vnd.openexec.approval+json"
"""The DSSE payload type under which approval artifacts are signed (SPEC §5)."""

REQUIRED_FIELDS: Final = frozenset(
    {"approval_id", "action_hash", "issued_by", "issued_at", "expires_at", "tenant_id", "signature"}
)
OPTIONAL_FIELDS: Final = frozenset({"audience", "kid", "decision", "reason"})

DECISIONS: Final = frozenset({"approve", "reject"})
"""Values of the optional ``decision`` member (SPEC §13); absent means ``approve``."""

MAX_REASON_CHARS: Final = 500
"""Longest accepted ``reason`` of a decision (SPEC §13)."""

_ACTION_HASH: Final = re.compile(r"\A[0-9a-f]{64}\Z")


@dataclass(frozen=True, slots=True)
class ApprovalArtifact:
    """A well-formed approval artifact; its signature is not yet verified.

    Attributes:
        approval_id: Opaque id; an approval executes at most one call.
        action_hash: 64 lowercase hex characters (SPEC §3).
        issued_by: The issuer, checked against the keyring entry's ``issuers``.
        issued_at: Aware datetime in UTC.
        expires_at: Aware datetime in UTC, later than ``issued_at``.
        tenant_id: The tenant the approval is for.
        audience: The server_id it is for, or ``None`` for any server.
        kid: The key that signed it, or ``None`` for the only configured key.
        decision: ``approve`` (also when the member is absent) or ``reject`` (SPEC §13).
        reason: The signed reason of the decision, at most 500 characters, or ``None``.
        signature: The decoded signature bytes (any length; checked against the key).
        received: Every member exactly as received, including ``signature`` (read-only).
        signing_input: The signed bytes: PAE over the JCS of ``received`` minus ``signature``.
        artifact_hash: SHA-256 hex (64 chars) of the JCS of ``received``.

    """

    approval_id: str
    action_hash: str
    issued_by: str
    issued_at: datetime
    expires_at: datetime
    tenant_id: str
    audience: str | None
    kid: str | None
    decision: str
    reason: str | None
    signature: bytes = field(repr=False)
    received: Mapping[str, str] = field(repr=False, compare=False)
    signing_input: bytes = field(repr=False)
    artifact_hash: str


@dataclass(frozen=True, slots=True)
class VerifiedApproval:
    """An approval that passed every check of :func:`verify_approval`.

    Attributes:
        approval_id: The artifact's ``approval_id`` (the store marks it consumed).
        kid: The keyring entry that verified it (also when the artifact named no ``kid``).
        issued_by: The artifact's issuer.
        artifact_hash: SHA-256 hex of the JCS of the artifact as received, signature included.
        expires_at: Aware UTC datetime.
        decision: ``approve`` or ``reject`` (SPEC §13): a verified reject refuses the call.
        reason: The decision's signed reason, or ``None``.

    """

    approval_id: str
    kid: str
    issued_by: str
    artifact_hash: str
    expires_at: datetime
    decision: str = "approve"
    reason: str | None = None

    def to_receipt_approval(self) -> ReceiptApproval:
        """Return the receipt's ``approval`` object for a signed approval (SPEC §7)."""
        return ReceiptApproval(
            method="signed",
            approval_id=self.approval_id,
            kid=self.kid,
            issued_by=self.issued_by,
            artifact_hash=self.artifact_hash,
        )

    def to_receipt_json(self) -> dict[str, Any]:
        """Return :meth:`to_receipt_approval` as its JSON object."""
        return self.to_receipt_approval().to_json()

    def consumed_until(self, clock_skew_seconds: int) -> datetime:
        """Return how long the consumed ``approval_id`` must be kept: ``expires_at`` + skew (SPEC §4).

        Saturates at the latest datetime instead of overflowing.
        """
        return shift(self.expires_at, clock_skew_seconds)


def approval_signing_input(artifact_fields: Mapping[str, Any]) -> bytes:
    """Return the bytes an approval signature covers (SPEC §5).

    Args:
        artifact_fields: The artifact's members; a ``signature`` member, if present, is left out.

    Returns:
        ``PAE("application/vnd.openexec.approval+json", JCS(fields without signature))``:
        ``b"DSSEv1 38 application/vnd.openexec.approval+json <len> <JCS>"``.

    Raises:
        MalformedInputError: A member cannot be canonicalized (RFC 8785).

    """
    body = {name: value for name, value in artifact_fields.items() if name != "signature"}
    return pae(APPROVAL_PAYLOAD_TYPE, canonicalize(body))


def sign_approval(fields: Mapping[str, Any], key: Ed25519PrivateKey | KeyringEntry) -> dict[str, Any]:
    """Sign approval fields; used by the governance CLI and by tests, never by the server.

    The fields are not checked: :func:`verify_approval` is the only judge of an artifact.

    Args:
        fields: The artifact members; an existing ``signature`` is dropped and replaced.
        key: An Ed25519 private key, or an ``hmac-sha256`` keyring entry (its shared secret).

    Returns:
        A new dict: ``fields`` plus ``"signature"``, standard base64 with padding of the
        64-byte Ed25519 signature or the 32-byte HMAC-SHA256 tag.

    Raises:
        MalformedInputError: A member cannot be canonicalized.
        ValueError: ``key`` is an ``ed25519`` keyring entry (it holds no private key).

    """
    body = {name: value for name, value in fields.items() if name != "signature"}
    signature = key.sign(approval_signing_input(body))
    return {**body, "signature": b64encode(signature)}


def parse_approval_artifact(obj: Any) -> ApprovalArtifact:
    """Check the shape of an untrusted approval artifact (SPEC §5 step ``approval_malformed``).

    Args:
        obj: The artifact as parsed from JSON (untrusted): a dict of strings.

    Returns:
        The artifact, timestamps converted to aware UTC datetimes, the signature decoded.

    Raises:
        ApprovalMalformedError: Not an object; a missing, unknown or non-string member; an
            empty or over-long (``MAX_FIELD_CHARS``) identifier; an ``action_hash`` that is not
            64 lowercase hex; a timestamp that is not RFC 3339 with ``Z`` or an offset (naive
            timestamps included), is not a real instant, or an ``expires_at`` not later than
            ``issued_at``; a ``signature`` that is not strict base64; a lone surrogate.

    """
    label = "approval artifact"
    members = check_members(obj, label=label, required=REQUIRED_FIELDS, optional=OPTIONAL_FIELDS)
    for name, value in members.items():
        if not isinstance(value, str):
            raise ApprovalMalformedError(f"approval artifact {name} must be a string")
    received: dict[str, str] = members
    check_identifiers(received, ("approval_id", "issued_by", "tenant_id", "audience", "kid"), label=label)
    decision = received.get("decision", "approve")
    if decision not in DECISIONS:
        raise ApprovalMalformedError("approval artifact decision must be 'approve' or 'reject'")
    reason = received.get("reason")
    if reason is not None and len(reason) > MAX_REASON_CHARS:
        raise ApprovalMalformedError(f"approval artifact reason must be at most {MAX_REASON_CHARS} characters")
    if not _ACTION_HASH.match(received["action_hash"]):
        raise ApprovalMalformedError("approval artifact action_hash must be 64 lowercase hex characters")
    issued_at, expires_at = parse_validity(received, label=label)
    signature, signing_input, artifact_hash = seal(received, label=label, signing_input=approval_signing_input)
    return ApprovalArtifact(
        approval_id=received["approval_id"],
        action_hash=received["action_hash"],
        issued_by=received["issued_by"],
        issued_at=issued_at,
        expires_at=expires_at,
        tenant_id=received["tenant_id"],
        audience=received.get("audience"),
        kid=received.get("kid"),
        decision=decision,
        reason=reason,
        signature=signature,
        received=MappingProxyType(dict(received)),
        signing_input=signing_input,
        artifact_hash=artifact_hash,
    )


def verify_approval(
    artifact_obj: Any,
    *,
    keyring: Keyring,
    action_hash: str,
    tenant_id: str,
    audience: str,
    now: datetime,
    clock_skew_seconds: int,
    max_ttl_seconds: int,
    min_issued_at: datetime | None = None,
) -> VerifiedApproval:
    """Verify an untrusted approval artifact for one call, in the order of SPEC §5.

    The first failing check decides the error:

    1. ``approval_malformed``: :func:`parse_approval_artifact`.
    2. ``approval_unknown_key``: no usable keyring entry (unknown ``kid``, no ``kid`` with other
       than one key, revoked, ``now`` outside ``not_before`` / ``not_after``).
    3. ``approval_bad_signature``: the signature, of the length the entry's algorithm needs,
       does not verify over the signed bytes. The algorithm is the entry's, never the artifact's.
    4. ``approval_issuer_mismatch``: ``issued_by`` is not among the entry's issuers.
    5. ``approval_tenant_mismatch``: the artifact's ``tenant_id`` is not ``tenant_id``.
    6. ``approval_audience_mismatch``: the artifact has an ``audience`` that is not ``audience``.
    7. ``approval_not_yet_valid``: ``issued_at`` is later than ``now`` + skew.
    8. ``approval_expired``: ``now`` is later than ``expires_at`` + skew, or ``issued_at`` is
       before ``min_issued_at`` (the nonce-retention horizon of SPEC §4).
    9. ``approval_ttl_too_long``: ``expires_at - issued_at`` exceeds ``max_ttl_seconds``.
    10. ``approval_action_mismatch``: the artifact's ``action_hash`` is not ``action_hash``.

    ``approval_consumed`` (SPEC §5, last) is checked by the store afterwards.

    Args:
        artifact_obj: The artifact object as received (untrusted).
        keyring: The configured approval keys.
        action_hash: The hash of this call (SPEC §3), 64 lowercase hex.
        tenant_id: This call's tenant. Never echoed in messages.
        audience: This server's ``server_id``.
        now: The current time, an aware datetime read once by the caller.
        clock_skew_seconds: Tolerated clock difference, seconds, >= 0 (default config 60).
        max_ttl_seconds: Longest accepted ``expires_at - issued_at``, seconds, > 0 (default 300).
        min_issued_at: Aware datetime; approvals issued earlier are refused as expired, so a
            pruned nonce can never be replayed. ``None`` disables the check.

    Returns:
        What the receipt records about the approval.

    Raises:
        ApprovalError: The subclass of the first failing check, whose ``code`` is the SPEC code.
        ValueError: ``now`` or ``min_issued_at`` is naive, or a limit is negative.

    """
    if now.utcoffset() is None or (min_issued_at is not None and min_issued_at.utcoffset() is None):
        raise ValueError("now and min_issued_at must be aware datetimes")
    if clock_skew_seconds < 0 or max_ttl_seconds <= 0:
        raise ValueError("clock_skew_seconds must be >= 0 and max_ttl_seconds > 0")
    now = now.astimezone(UTC)

    # (1): parse; nothing below reads a member that was not checked here.
    artifact = parse_approval_artifact(artifact_obj)
    # (2) to (9): key, signature, issuer, tenant, audience, validity window, lifetime.
    entry = verify_signed(
        artifact,
        label="artifact",
        keyring=keyring,
        tenant_id=tenant_id,
        audience=audience,
        now=now,
        clock_skew_seconds=clock_skew_seconds,
        max_ttl_seconds=max_ttl_seconds,
        min_issued_at=min_issued_at,
    )
    # (10): the approval is for exactly this call.
    if artifact.action_hash != action_hash:
        raise ApprovalActionMismatchError(
            f"artifact action_hash {artifact.action_hash} is not the action_hash of this call"
        )
    return VerifiedApproval(
        approval_id=artifact.approval_id,
        kid=entry.kid,
        issued_by=artifact.issued_by,
        artifact_hash=artifact.artifact_hash,
        expires_at=artifact.expires_at,
        decision=artifact.decision,
        reason=artifact.reason,
    )
