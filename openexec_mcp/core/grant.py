"""Grant artifacts (SPEC §13): parser, signed bytes, CEL constraint and the verifier of the SPEC order.

A grant lets one signed decision cover several calls without being a blank cheque: it names the
actions (fnmatch patterns), optionally constrains their arguments with a CEL expression, is used
at most ``max_uses`` times and lives at most ``approvals.max_grant_ttl_seconds``::

    {"grant_id": "gr-…", "tenant_id": "acme", "audience": "<server_id>", "issued_by": "clawshield",
     "issued_at": "2026-11-21T10:00:00Z", "expires_at": "2026-11-21T18:00:00Z", "kid": "gov-2026-11",
     "actions": ["send_*"], "when": "args.amount < 100", "max_uses": 5, "signature": "<base64>"}

The signed bytes are the DSSE PAE, under ``application/vnd.openexec.grant+json``, of the RFC 8785
canonical JSON of every member but ``signature`` (as for approvals, SPEC §5).

``when`` is CEL over ``args`` (the payload without the nonce), ``action`` (the tool name) and
``tenant_id``: the variables and the wrapper (:mod:`openexec_mcp.core.cel`) of the policy rules
(SPEC §11). The checks shared with approval artifacts are in :mod:`openexec_mcp.core.artifact`.

Nothing here reads the clock, the network or a database. Whether a grant has uses left
(``approval_grant_exhausted``) or was revoked (``approval_grant_revoked``) is the store's check,
made after this one, atomically with the nonce claim.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
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
from openexec_mcp.core.cel import CELCompileError, CELCondition, CELEvaluationError, activation, compile_condition
from openexec_mcp.core.encoding import b64encode, pae
from openexec_mcp.core.keyring import Keyring, KeyringEntry
from openexec_mcp.errors import ApprovalActionMismatchError, ApprovalMalformedError

__all__ = [
    "GRANT_PAYLOAD_TYPE",
    "MAX_PATTERNS",
    "MAX_WHEN_CHARS",
    "GrantArtifact",
    "VerifiedGrant",
    "compile_when",
    "grant_signing_input",
    "parse_grant_artifact",
    "sign_grant",
    "verify_grant",
]

logger = logging.getLogger("openexec_mcp.grants")

GRANT_PAYLOAD_TYPE: Final = "application/vnd.openexec.grant+json"
"""The DSSE payload type under which grants are signed (SPEC §13)."""

_STRING_FIELDS: Final = frozenset({"grant_id", "tenant_id", "issued_by", "issued_at", "expires_at", "kid", "signature"})
REQUIRED_FIELDS: Final = _STRING_FIELDS | {"actions", "max_uses"}
OPTIONAL_FIELDS: Final = frozenset({"audience", "when"})

MAX_PATTERNS: Final = 64
"""Most ``actions`` patterns in one grant."""
MAX_WHEN_CHARS: Final = 2000
"""Longest accepted ``when`` expression."""
MAX_USES: Final = 1_000_000
"""Largest accepted ``max_uses``."""


@dataclass(frozen=True, slots=True)
class GrantArtifact:
    """A well-formed grant; its signature is not yet verified.

    Attributes:
        grant_id: Opaque id, unique per server; the store counts its uses.
        tenant_id: The tenant it is for.
        audience: The server_id it is for, or ``None`` for any server.
        issued_by: The issuer, checked against the keyring entry's ``issuers``.
        issued_at: Aware UTC datetime.
        expires_at: Aware UTC datetime, later than ``issued_at``.
        kid: The key that signed it.
        actions: fnmatch patterns (case-sensitive) over tool names, 1 to ``MAX_PATTERNS``.
        when: CEL source over ``args``, ``action``, ``tenant_id``, or ``None`` (always).
        max_uses: Calls it may approve, >= 1.
        signature: Decoded signature bytes.
        received: Every member as received (read-only).
        signing_input: PAE over the JCS of ``received`` minus ``signature``.
        artifact_hash: SHA-256 hex of the JCS of ``received``.
        program: The compiled ``when``, or ``None``.
    """

    grant_id: str
    tenant_id: str
    audience: str | None
    issued_by: str
    issued_at: datetime
    expires_at: datetime
    kid: str
    actions: tuple[str, ...]
    when: str | None
    max_uses: int
    signature: bytes = field(repr=False)
    received: Mapping[str, Any] = field(repr=False, compare=False)
    signing_input: bytes = field(repr=False)
    artifact_hash: str
    program: CELCondition | None = field(repr=False, compare=False, default=None)

    def matches(self, action: str, args: Mapping[str, Any], tenant_id: str) -> bool:
        """Return whether this grant covers a call: a pattern matches and ``when`` is ``true``.

        A ``when`` that fails to evaluate or yields a non-bool does not match (fail closed).
        """
        if not any(fnmatch.fnmatchcase(action, pattern) for pattern in self.actions):
            return False
        if self.program is None:
            return True
        try:
            return self.program.evaluate(activation(action, args, tenant_id))
        except CELEvaluationError as exc:  # a missing key, a type error, a non-bool, ...
            logger.info("grant %s: when failed for %s: %s", self.grant_id[:64], action, exc.detail)
            return False


@dataclass(frozen=True, slots=True)
class VerifiedGrant:
    """A grant that passed every check of :func:`verify_grant` for one call.

    Attributes:
        grant_id: Its id (the store consumes one use).
        kid: The keyring entry that verified it.
        issued_by: Its issuer.
        artifact_hash: SHA-256 hex of the JCS of the grant as received.
        expires_at: Aware UTC datetime.
        max_uses: Its ``max_uses``.
    """

    grant_id: str
    kid: str
    issued_by: str
    artifact_hash: str
    expires_at: datetime
    max_uses: int

    def to_receipt_json(self, use: int | None) -> dict[str, Any]:
        """Return the receipt's ``approval`` object (SPEC §13): ``use`` is the 1-based use number."""
        return {
            "method": "grant",
            "approval_id": self.grant_id,
            "kid": self.kid,
            "issued_by": self.issued_by,
            "artifact_hash": self.artifact_hash,
            "use": use,
        }


def compile_when(source: str) -> CELCondition:
    """Compile a grant's CEL ``when`` expression (:func:`openexec_mcp.core.cel.compile_condition`).

    Raises:
        ApprovalMalformedError: It does not compile.
    """
    try:
        return compile_condition(source)
    except CELCompileError as exc:
        raise ApprovalMalformedError(f"grant when does not compile: {exc.detail}") from None


def grant_signing_input(fields: Mapping[str, Any]) -> bytes:
    """Return the bytes a grant signature covers: PAE(grant type, JCS(fields minus signature)).

    Raises:
        MalformedInputError: A member cannot be canonicalized.
    """
    body = {name: value for name, value in fields.items() if name != "signature"}
    return pae(GRANT_PAYLOAD_TYPE, canonicalize(body))


def sign_grant(fields: Mapping[str, Any], key: Ed25519PrivateKey | KeyringEntry) -> dict[str, Any]:
    """Sign grant fields (governance side: CLI, console, tests); an existing signature is replaced."""
    body = {name: value for name, value in fields.items() if name != "signature"}
    return {**body, "signature": b64encode(key.sign(grant_signing_input(body)))}


def parse_grant_artifact(obj: Any) -> GrantArtifact:
    """Check the shape of an untrusted grant (``approval_malformed``) and compile its ``when``.

    Raises:
        ApprovalMalformedError: Not an object; a missing or unknown member; a string member that
            is not a string, empty or over-long; ``actions`` not a list of 1 to ``MAX_PATTERNS``
            non-empty strings; ``max_uses`` not an integer from 1 to ``MAX_USES`` (booleans
            refused); a bad timestamp or ``expires_at`` not after ``issued_at``; a bad
            signature encoding; a ``when`` that is too long or does not compile.
    """
    members = check_members(obj, label="grant", required=REQUIRED_FIELDS, optional=OPTIONAL_FIELDS)
    for name in _STRING_FIELDS | OPTIONAL_FIELDS:
        if name in members and not isinstance(members[name], str):
            raise ApprovalMalformedError(f"grant {name} must be a string")
    check_identifiers(members, ("grant_id", "tenant_id", "issued_by", "kid", "audience"), label="grant")
    actions: Any = members["actions"]
    if (
        not isinstance(actions, list)
        or not 0 < len(actions) <= MAX_PATTERNS  # pyright: ignore[reportUnknownArgumentType]
        or not all(isinstance(p, str) and 0 < len(p) <= MAX_FIELD_CHARS for p in actions)  # pyright: ignore[reportUnknownVariableType]
    ):
        raise ApprovalMalformedError(f"grant actions must be a list of 1 to {MAX_PATTERNS} non-empty patterns")
    max_uses = members["max_uses"]
    if type(max_uses) is not int or not 1 <= max_uses <= MAX_USES:
        raise ApprovalMalformedError(f"grant max_uses must be an integer from 1 to {MAX_USES}")
    issued_at, expires_at = parse_validity(members, label="grant")
    when: str | None = members.get("when")
    if when is not None and not 0 < len(when) <= MAX_WHEN_CHARS:
        raise ApprovalMalformedError(f"grant when must be 1 to {MAX_WHEN_CHARS} characters")
    signature, signing_input, artifact_hash = seal(members, label="grant", signing_input=grant_signing_input)
    program = compile_when(when) if when is not None else None
    return GrantArtifact(
        grant_id=members["grant_id"],
        tenant_id=members["tenant_id"],
        audience=members.get("audience"),
        issued_by=members["issued_by"],
        issued_at=issued_at,
        expires_at=expires_at,
        kid=members["kid"],
        actions=tuple(actions),  # pyright: ignore[reportUnknownArgumentType]
        when=when,
        max_uses=max_uses,
        signature=signature,
        received=MappingProxyType(dict(members)),
        signing_input=signing_input,
        artifact_hash=artifact_hash,
        program=program,
    )


def verify_grant(
    grant_obj: Any,
    *,
    keyring: Keyring,
    tenant_id: str,
    audience: str,
    now: datetime,
    clock_skew_seconds: int,
    max_grant_ttl_seconds: int,
    call: tuple[str, Mapping[str, Any]] | None = None,
) -> tuple[GrantArtifact, VerifiedGrant]:
    """Verify an untrusted grant in the order of SPEC §5 (SPEC §13).

    ``approval_malformed`` → ``approval_unknown_key`` → ``approval_bad_signature`` →
    ``approval_issuer_mismatch`` → ``approval_tenant_mismatch`` → ``approval_audience_mismatch`` →
    ``approval_not_yet_valid`` → ``approval_expired`` → ``approval_ttl_too_long`` (over
    ``max_grant_ttl_seconds``) → ``approval_action_mismatch`` (with ``call``: no pattern matches
    its action, or ``when`` is not ``true`` for its arguments). Uses and revocation are the store's.

    Args:
        grant_obj: The grant as received (untrusted).
        keyring: The approval keys (grants are signed by the same keys as approvals).
        tenant_id: The caller's tenant (never echoed).
        audience: This server's ``server_id``.
        now: Aware current time.
        clock_skew_seconds: Tolerated skew, seconds.
        max_grant_ttl_seconds: Longest accepted lifetime, seconds (default config 28800).
        call: ``(action name, payload without nonce)`` to match, or ``None`` to skip that check
            (``POST /grants``).

    Returns:
        The parsed grant and what the receipt records of it.

    Raises:
        ApprovalError: The subclass of the first failing check.
    """
    grant = parse_grant_artifact(grant_obj)
    entry = verify_signed(
        grant,
        label="grant",
        keyring=keyring,
        tenant_id=tenant_id,
        audience=audience,
        now=now,
        clock_skew_seconds=clock_skew_seconds,
        max_ttl_seconds=max_grant_ttl_seconds,
    )
    if call is not None and not grant.matches(call[0], call[1], tenant_id):
        raise ApprovalActionMismatchError("grant does not cover this action or these arguments")
    verified = VerifiedGrant(
        grant_id=grant.grant_id,
        kid=entry.kid,
        issued_by=grant.issued_by,
        artifact_hash=grant.artifact_hash,
        expires_at=grant.expires_at,
        max_uses=grant.max_uses,
    )
    return grant, verified
