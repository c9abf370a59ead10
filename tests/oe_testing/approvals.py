"""The approver's side for tests: a fixed governance key, minting and re-signing artifacts.

Artifacts are signed with :func:`openexec_mcp.core.approval.sign_approval`, the same function the
governance CLI uses; the server only ever sees the public key (``GOV_PUBLIC_B64``). ``tamper``
re-signs with the real key after changing fields, so a refusal shows that the semantic check
fired, not the signature check.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from openexec_mcp.core.approval import sign_approval
from openexec_mcp.core.encoding import b64encode
from openexec_mcp.core.keyring import KeyringEntry

GOV_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"openexec-mcp test governance key").digest())
GOV_PUBLIC_B64 = b64encode(GOV_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
GOV_KID = "gov-test"
ISSUER = "clawshield"

HMAC_SECRET = "a shared secret for the HMAC keyring entry, test only"
HMAC_ENTRY = KeyringEntry(kid="clawshield", alg="hmac-sha256", key=HMAC_SECRET.encode(), issuers=frozenset({ISSUER}))
"""What ``CLAWSHIELD_SECRET_KEY=HMAC_SECRET`` configures; it can also sign (shared secret)."""

Signer = Ed25519PrivateKey | KeyringEntry

DROP: Any = object()
"""Pass as a :func:`tamper` change to leave that member out of the re-signed artifact."""


def approvals_config(kid: str = GOV_KID) -> dict[str, Any]:
    """The ``[approvals]`` table holding the test governance key (a ``make_runtime`` override)."""
    return {"keys": [{"kid": kid, "alg": "ed25519", "public_key": GOV_PUBLIC_B64, "issuers": [ISSUER]}]}


def write_private_key(path: Path) -> Path:
    """Write the test governance private key as the PEM file ``openexec-mcp approve --key`` reads."""
    path.write_bytes(GOV_KEY.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    path.chmod(0o600)
    return path


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def mint(
    action_hash: str,
    *,
    tenant_id: str = "default",
    key: Signer = GOV_KEY,
    kid: str | None = GOV_KID,
    ttl_seconds: int = 240,
    now: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Return a fresh signed artifact approving ``action_hash`` once for ``tenant_id``."""
    issued = (now or datetime.now(UTC)) - timedelta(seconds=5)
    fields: dict[str, Any] = {
        "approval_id": "ap-" + secrets.token_hex(8),
        "action_hash": action_hash,
        "issued_by": ISSUER,
        "issued_at": iso(issued),
        "expires_at": iso(issued + timedelta(seconds=ttl_seconds)),
        "tenant_id": tenant_id,
    }
    if kid is not None:
        fields["kid"] = kid
    fields.update(extra)
    return sign_approval(fields, key)


def tamper(artifact: Mapping[str, Any], key: Signer = GOV_KEY, **changes: Any) -> dict[str, Any]:
    """Return ``artifact`` with ``changes`` applied and signed again with ``key`` (the real key).

    A change whose value is :data:`DROP` leaves that member out. The old ``signature`` member is
    replaced by the new one, so a refusal of the result is the semantic check (SPEC §5), never
    the signature check.
    """
    merged = {**artifact, **changes}
    return sign_approval({name: value for name, value in merged.items() if value is not DROP}, key)


def mint_grant(
    actions: list[str],
    *,
    max_uses: int = 2,
    tenant_id: str = "default",
    key: Signer = GOV_KEY,
    kid: str = GOV_KID,
    ttl_seconds: int = 3600,
    now: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Return a fresh signed grant (SPEC §13) for ``actions`` patterns, ``max_uses`` calls."""
    from openexec_mcp.core.grant import sign_grant

    issued = (now or datetime.now(UTC)) - timedelta(seconds=5)
    fields: dict[str, Any] = {
        "grant_id": "gr-" + secrets.token_hex(8),
        "tenant_id": tenant_id,
        "issued_by": ISSUER,
        "issued_at": iso(issued),
        "expires_at": iso(issued + timedelta(seconds=ttl_seconds)),
        "kid": kid,
        "actions": actions,
        "max_uses": max_uses,
    }
    fields.update(extra)
    return sign_grant(fields, key)
