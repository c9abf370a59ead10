"""The checks approval artifacts (SPEC §5) and grants (SPEC §13) share, written once.

Both are signed JSON objects with an issuer, a tenant, an optional audience, a key id, a validity
window and a base64 signature over the DSSE PAE of the JCS of every other member, and both are
verified in the order of SPEC §5. This module holds the parts that are the same:

- while parsing (every failure is ``approval_malformed``): :func:`check_members` (an object, no
  missing or unknown member), :func:`check_identifiers` (1 to :data:`MAX_FIELD_CHARS`
  characters), :func:`parse_validity` (RFC 3339 ``issued_at`` before ``expires_at``) and
  :func:`seal` (the decoded signature, the signed bytes and the artifact hash);
- while verifying: :func:`verify_signed`, SPEC §5 steps 2 to 9 (``approval_unknown_key`` →
  ``approval_bad_signature`` → ``approval_issuer_mismatch`` → ``approval_tenant_mismatch`` →
  ``approval_audience_mismatch`` → ``approval_not_yet_valid`` → ``approval_expired`` →
  ``approval_ttl_too_long``), over any :class:`SignedArtifact`.

What differs stays with each kind: the members and their own checks, the payload type, step 1's
order within the parse, and step 10 (``approval_action_mismatch``: an approval names one
``action_hash``, a grant names patterns and a ``when``). ``label`` starts every message
(``approval artifact``, ``artifact``, ``grant``). Nothing here reads the clock, the network or a
database.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from openexec_mcp.core.canonical import canonicalize, sha256_hex
from openexec_mcp.core.clock import parse_rfc3339, shift
from openexec_mcp.core.encoding import b64decode_strict
from openexec_mcp.core.keyring import Keyring, KeyringEntry
from openexec_mcp.errors import (
    ApprovalAudienceMismatchError,
    ApprovalExpiredError,
    ApprovalIssuerMismatchError,
    ApprovalMalformedError,
    ApprovalNotYetValidError,
    ApprovalTenantMismatchError,
    ApprovalTTLTooLongError,
    MalformedInputError,
)

__all__ = [
    "MAX_FIELD_CHARS",
    "SignedArtifact",
    "check_identifiers",
    "check_members",
    "parse_validity",
    "seal",
    "verify_signed",
]

MAX_FIELD_CHARS: Final = 256
"""Longest accepted identifier (``approval_id``, ``grant_id``, ``issued_by``, ``tenant_id``, ``audience``, ``kid``)."""


class SignedArtifact(Protocol):
    """What :func:`verify_signed` reads of a parsed approval artifact or grant."""

    @property
    def kid(self) -> str | None:
        """The key that signed it, or ``None`` for the only configured key."""
        ...

    @property
    def issued_by(self) -> str:
        """The issuer."""
        ...

    @property
    def tenant_id(self) -> str:
        """The tenant it is for."""
        ...

    @property
    def audience(self) -> str | None:
        """The server_id it is for, or ``None`` for any server."""
        ...

    @property
    def issued_at(self) -> datetime:
        """Aware UTC datetime."""
        ...

    @property
    def expires_at(self) -> datetime:
        """Aware UTC datetime, later than ``issued_at``."""
        ...

    @property
    def signature(self) -> bytes:
        """The decoded signature."""
        ...

    @property
    def signing_input(self) -> bytes:
        """The signed bytes: PAE over the JCS of every member but ``signature``."""
        ...


def check_members(obj: Any, *, label: str, required: Collection[str], optional: Collection[str]) -> dict[Any, Any]:
    """Return ``obj`` as a dict when it is an object with every ``required`` member and no unknown one.

    Raises:
        ApprovalMalformedError: Not a JSON object; a missing member; an unknown member (at most
            five named, each cut to 66 characters).
    """
    if not isinstance(obj, dict):
        raise ApprovalMalformedError(f"{label} must be a JSON object, not {type(obj).__name__}")
    members: dict[Any, Any] = obj  # pyright: ignore[reportUnknownVariableType]
    missing = set(required) - members.keys()
    if missing:
        raise ApprovalMalformedError(f"{label} is missing {', '.join(sorted(missing))}")
    unknown = [name for name in members if name not in required and name not in optional]
    if unknown:
        shown = ", ".join(repr(name)[:66] for name in unknown[:5])
        raise ApprovalMalformedError(f"{label} has unknown members: {shown}")
    return members


def check_identifiers(members: Mapping[str, Any], names: Collection[str], *, label: str) -> None:
    """Check that each of ``names`` present (string members) has 1 to :data:`MAX_FIELD_CHARS` characters.

    Raises:
        ApprovalMalformedError: One is empty or over-long.
    """
    for name in names:
        value = members.get(name)
        if value is not None and not 0 < len(value) <= MAX_FIELD_CHARS:
            raise ApprovalMalformedError(f"{label} {name} must be 1 to {MAX_FIELD_CHARS} characters")


def parse_validity(members: Mapping[str, Any], *, label: str) -> tuple[datetime, datetime]:
    """Return ``(issued_at, expires_at)`` as aware UTC datetimes.

    Raises:
        ApprovalMalformedError: A timestamp that is not RFC 3339 with ``Z`` or an offset, or is
            not a real instant; ``expires_at`` not later than ``issued_at``.
    """
    issued_at = _timestamp(members, "issued_at", label)
    expires_at = _timestamp(members, "expires_at", label)
    if expires_at <= issued_at:
        raise ApprovalMalformedError(f"{label} expires_at must be later than issued_at")
    return issued_at, expires_at


def seal(
    members: Mapping[str, Any], *, label: str, signing_input: Callable[[Mapping[str, Any]], bytes]
) -> tuple[bytes, bytes, str]:
    """Return ``(signature, signed bytes, artifact_hash)`` of a checked artifact.

    Args:
        members: The members as received, ``signature`` a string.
        label: Starts the messages.
        signing_input: The kind's PAE of the JCS of every member but ``signature``.

    Returns:
        The strictly decoded signature, ``signing_input(members)``, and the SHA-256 hex of the
        JCS of ``members`` (signature included).

    Raises:
        ApprovalMalformedError: The signature is not strict base64; a member cannot be canonicalized.
    """
    try:
        signature = b64decode_strict(members["signature"])
    except MalformedInputError as exc:
        raise ApprovalMalformedError(f"{label} signature: {exc.message}") from None
    try:
        return signature, signing_input(members), sha256_hex(canonicalize(members))
    except MalformedInputError as exc:
        raise ApprovalMalformedError(f"{label} cannot be canonicalized: {exc.message}") from None


def verify_signed(
    artifact: SignedArtifact,
    *,
    label: str,
    keyring: Keyring,
    tenant_id: str,
    audience: str,
    now: datetime,
    clock_skew_seconds: int,
    max_ttl_seconds: int,
    min_issued_at: datetime | None = None,
) -> KeyringEntry:
    """Run SPEC §5 steps 2 to 9 on a parsed artifact, in order; return the key that verified it.

    Args:
        artifact: A parsed approval artifact or grant (step 1 done).
        label: Starts the messages (``artifact``, ``grant``).
        keyring: The approval keys.
        tenant_id: The caller's tenant (never echoed).
        audience: This server's ``server_id``.
        now: Aware current time.
        clock_skew_seconds: Tolerated skew, seconds, >= 0.
        max_ttl_seconds: Longest accepted ``expires_at - issued_at``, seconds.
        min_issued_at: Aware datetime; earlier issues are refused as expired (the nonce-retention
            horizon of SPEC §4), or ``None``.

    Raises:
        ApprovalError: The subclass of the first failing check.
    """
    now = now.astimezone(UTC)
    # (2): find the key; it, not the artifact, fixes the algorithm.
    entry = keyring.select(artifact.kid, now=now)
    # (3): verify the signature over every member but ``signature``.
    entry.verify_signature(artifact.signing_input, artifact.signature)
    # (4): the key must be allowed to speak for this issuer.
    if artifact.issued_by not in entry.issuers:
        raise ApprovalIssuerMismatchError(
            f"{label} issued_by {_quote(artifact.issued_by)} is not accepted by approval key {entry.kid!r}"
        )
    # (5): it is for this tenant (the caller's tenant is never echoed).
    if artifact.tenant_id != tenant_id:
        raise ApprovalTenantMismatchError(
            f"{label} tenant_id {_quote(artifact.tenant_id)} does not match this server's tenant"
        )
    # (6): an audience, when present, names this server.
    if artifact.audience is not None and artifact.audience != audience:
        raise ApprovalAudienceMismatchError(f"{label} audience {_quote(artifact.audience)} does not match this server")
    # (7): not issued in the future.
    if artifact.issued_at > shift(now, clock_skew_seconds):
        raise ApprovalNotYetValidError(
            f"{label} issued_at {_iso(artifact.issued_at)} is more than {clock_skew_seconds} s after now ({_iso(now)})"
        )
    # (8): not expired, and not older than the nonce-retention horizon.
    if now > shift(artifact.expires_at, clock_skew_seconds):
        raise ApprovalExpiredError(
            f"{label} expired at {_iso(artifact.expires_at)} (now {_iso(now)}, clock skew {clock_skew_seconds} s)"
        )
    if min_issued_at is not None and artifact.issued_at < min_issued_at:
        raise ApprovalExpiredError(
            f"{label} issued_at {_iso(artifact.issued_at)} is before the nonce-retention horizon "
            f"{_iso(min_issued_at.astimezone(UTC))}"
        )
    # (9): the lifetime is bounded, whatever the issuer chose.
    lifetime = artifact.expires_at - artifact.issued_at
    if lifetime > timedelta(seconds=max_ttl_seconds):
        raise ApprovalTTLTooLongError(
            f"{label} lifetime is {lifetime.total_seconds():g} s; the limit is {max_ttl_seconds} s"
        )
    return entry


def _timestamp(members: Mapping[str, Any], name: str, label: str) -> datetime:
    try:
        return parse_rfc3339(members[name])
    except MalformedInputError as exc:
        raise ApprovalMalformedError(f"{label} {name}: {exc.message}") from None


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _quote(value: str) -> str:
    # Artifact values are attacker-chosen: bound what reaches logs and messages.
    return repr(value[:64]) + ("…" if len(value) > 64 else "")
