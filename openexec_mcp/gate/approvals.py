"""The approval step of the gate: auto, signed artifacts, the approval inbox, elicitation (SPEC §5).

:meth:`Approver.decide` says, for one call, whether it is approved and how, without consuming
anything: the artifact's ``approval_id`` is consumed by the store together with the nonce claim.
An artifact comes with the call (``_meta["dev.openexec/approval"]`` or ``approval_artifact``) or
from the inbox (submitted with ``POST /approvals`` against its action_hash). An artifact is
accepted under the ``signed`` and the ``elicit`` policy alike (a signature is stronger than a
client-attested confirmation); ``elicit`` otherwise asks the user through the client.
The server never holds a governance private key: artifacts authenticate themselves.
The elicitation channel itself (form, prompt limits, :class:`Elicitor`) is :mod:`.elicitation`;
its names are re-exported here.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio.to_thread

from openexec_mcp.config import Settings
from openexec_mcp.core.approval import VerifiedApproval, verify_approval
from openexec_mcp.core.canonical import canonicalize, json_object, sha256_hex
from openexec_mcp.core.clock import format_timestamp, shift
from openexec_mcp.core.grant import GrantArtifact, VerifiedGrant, verify_grant
from openexec_mcp.core.keyring import Keyring, KeyringEntry, load_ed25519_public_key
from openexec_mcp.errors import (
    ApprovalDeclinedError,
    ApprovalDeniedError,
    ApprovalError,
    ApprovalGrantExhaustedError,
    ApprovalGrantRevokedError,
    ApprovalRejectedError,
    ApprovalRequiredError,
    ConfigError,
    MalformedInputError,
)
from openexec_mcp.gate.elicitation import (
    APPROVAL_SCHEMA,
    ELICIT_MAX_CHARS,
    ELICIT_MAX_VALUE_CHARS,
    Elicitor,
    ElicitOutcome,
    InputRequired,
    elicitation_prompt,
)
from openexec_mcp.store.base import ApprovalRequest, Store

__all__ = [
    "APPROVAL_SCHEMA",
    "AUTO_APPROVAL",
    "ELICIT_MAX_CHARS",
    "ELICIT_MAX_VALUE_CHARS",
    "Approved",
    "Approver",
    "Denied",
    "ElicitOutcome",
    "Elicitor",
    "InputRequired",
    "build_keyring",
]

AUTO_APPROVAL: Mapping[str, Any] = {
    "method": "auto",
    "approval_id": None,
    "kid": None,
    "issued_by": None,
    "artifact_hash": None,
}
"""The receipt ``approval`` object of an ``auto`` approval (SPEC §10)."""


@dataclass(frozen=True, slots=True)
class Approved:
    """The call is approved. ``receipt_approval`` is the receipt's ``approval`` object.

    ``keep_until`` (RFC 3339 UTC) is the artifact's ``expires_at`` + clock skew (saturated at the
    last datetime, never overflowing): pass it as ``NonceClaim.approval_keep_until`` so the
    consumed ``approval_id`` outlives its nonce record exactly as long as the artifact could be
    presented again (SPEC §4).
    """

    receipt_approval: Mapping[str, Any]
    approval_id: str | None = None
    keep_until: str | None = None
    grant_id: str | None = None
    """Set when a grant approves the call (SPEC §13): the store consumes one use with the nonce claim,
    and the use number completes ``receipt_approval["use"]``."""


@dataclass(frozen=True, slots=True)
class Denied:
    """The call is not approved.

    Attributes:
        error: Why (its code goes on the receipt).
        receipt_approval: The receipt's ``approval`` object: the method that was required and,
            when an artifact was presented, what can be said of it (its ``artifact_hash``).
        open_request: Record the call in the inbox for an approver.
    """

    error: ApprovalError
    receipt_approval: Mapping[str, Any]
    open_request: bool = False


def build_keyring(settings: Settings) -> Keyring:
    """Build the keyring from ``[[approvals.keys]]`` and the ``CLAWSHIELD_*`` variables.

    Raises:
        ConfigError: A key is invalid (bad encoding, small-order Ed25519 point, duplicate kid,
            missing or misplaced ``public_key`` / ``secret``).
    """
    entries: list[KeyringEntry] = []
    for key in settings.approvals.keys:
        if key.alg == "ed25519":
            if key.public_key is None or key.secret is not None:
                raise ConfigError(f"approval key {key.kid!r}: ed25519 needs public_key and no secret")
            material = load_ed25519_public_key(key.public_key)
        else:
            if key.secret is None or key.public_key is not None:
                raise ConfigError(f"approval key {key.kid!r}: hmac-sha256 needs secret and no public_key")
            material = key.secret.get_secret_value().encode("utf-8")
        entries.append(
            KeyringEntry(
                kid=key.kid,
                alg=key.alg,
                key=material,
                issuers=frozenset(key.issuers or [key.kid]),
                not_before=key.not_before,
                not_after=key.not_after,
                revoked=key.revoked,
            )
        )
    return Keyring(entries)


class Approver:
    """Decides the approval of calls for one server process.

    Args:
        settings: The settings (audience = ``server_id``, skew, TTL, retention).
        keyring: The approval keys.
        store: Holds the inbox.
    """

    def __init__(self, settings: Settings, keyring: Keyring, store: Store) -> None:
        self.keyring = keyring
        self._store = store
        self._audience = settings.server_id
        self._skew = settings.approvals.clock_skew_seconds
        self._max_ttl = settings.approvals.max_ttl_seconds
        self._retention_seconds = settings.nonce.retention_seconds
        self._request_ttl_seconds = max(settings.approvals.max_ttl_seconds, 900)
        self._max_pending = settings.approvals.max_pending_per_tenant
        self._max_grant_ttl = settings.approvals.max_grant_ttl_seconds
        self.on_request: Callable[[ApprovalRequest], None] | None = None
        """Called with each pending request opened (the governance link of SPEC §13), or ``None``."""

    async def decide(
        self,
        policy: str,
        *,
        action_request: Mapping[str, Any],
        action_hash: str,
        tenant_id: str,
        artifact: Any,
        elicitor: Elicitor | None,
        now: datetime,
    ) -> Approved | Denied | InputRequired:
        """Decide the approval of one call; consumes nothing.

        Args:
            policy: ``auto``, ``signed``, ``elicit`` or ``deny``.
            action_request: The action request (SPEC §3), shown to the user when eliciting.
            action_hash: Its hash, 64 hex.
            tenant_id: The caller's tenant.
            artifact: The untrusted artifact that came with the call, or ``None``.
            elicitor: The client's elicitation channel, or ``None``.
            now: The current aware UTC time, read once.
        """
        if policy == "auto":
            return Approved(AUTO_APPROVAL)
        if policy == "deny":
            return Denied(ApprovalDeniedError("the policy denies this action"), AUTO_APPROVAL)
        if artifact is not None:
            return self._verify_first([artifact], action_hash=action_hash, tenant_id=tenant_id, now=now)
        inbox = await self._inbox_artifacts(tenant_id, action_hash)
        inbox_refusal: Denied | None = None
        if inbox:
            decision = self._verify_first(inbox, action_hash=action_hash, tenant_id=tenant_id, now=now)
            if isinstance(decision, Approved) or isinstance(decision.error, ApprovalRejectedError):
                return decision
            # Every stored artifact failed (expired, say): the approver must see the call again.
            inbox_refusal = Denied(decision.error, decision.receipt_approval, open_request=True)
        if policy == "signed":
            by_grant = await self._grant_decision(action_request, tenant_id=tenant_id, now=now)
            if by_grant is not None:
                return by_grant
        if inbox_refusal is not None:
            return inbox_refusal
        required = {**AUTO_APPROVAL, "method": "signed" if policy == "signed" else "elicitation"}
        if policy == "signed" or elicitor is None:
            return Denied(ApprovalRequiredError("this action needs an approval artifact"), required, open_request=True)
        message = elicitation_prompt(action_request, action_hash)
        if message is None:
            # Never ask a person about a call they cannot see whole.
            error = ApprovalRequiredError(
                "the arguments are too large to show for confirmation; submit a signed approval"
            )
            return Denied(error, required, open_request=True)
        outcome = await elicitor.confirm(message, action_hash)
        if outcome == "accept":
            evidence = {"action_hash": action_hash, "action": "accept", "content": {"approve": True}}
            return Approved(
                {**AUTO_APPROVAL, "method": "elicitation", "artifact_hash": sha256_hex(canonicalize(evidence))}
            )
        if outcome == "input_required":
            return InputRequired(message, action_hash)
        if outcome == "unsupported":
            error = ApprovalRequiredError("the client cannot ask the user (no elicitation); submit a signed approval")
            return Denied(error, required, open_request=True)
        return Denied(ApprovalDeclinedError(f"the user did not approve ({outcome})"), required)

    def verify(self, artifact: Any, *, action_hash: str, tenant_id: str, now: datetime) -> VerifiedApproval:
        """Verify one artifact for one call (SPEC §5 order). Raises the ApprovalError of the first failed check."""
        return verify_approval(
            artifact,
            keyring=self.keyring,
            action_hash=action_hash,
            tenant_id=tenant_id,
            audience=self._audience,
            now=now,
            clock_skew_seconds=self._skew,
            max_ttl_seconds=self._max_ttl,
            min_issued_at=shift(now, -self._retention_seconds),
        )

    async def open_request(
        self, *, tenant_id: str, action_request: Mapping[str, Any], action_hash: str, now: datetime
    ) -> ApprovalRequest:
        """Record (or find) the pending inbox request for this call."""
        expires = shift(now, self._request_ttl_seconds)
        request = ApprovalRequest(
            request_id=secrets.token_hex(16),
            tenant_id=tenant_id,
            action_hash=action_hash,
            action_request=canonicalize(dict(action_request)).decode(),
            created_at=format_timestamp(now),
            expires_at=format_timestamp(expires),
            expires_unix=expires.timestamp(),
        )
        opened = await anyio.to_thread.run_sync(
            self._store.open_approval_request, request, now.timestamp(), self._max_pending
        )
        if self.on_request is not None:  # SPEC §13: the governance link pushes it (never blocks)
            self.on_request(opened)
        return opened

    def _verify_first(
        self, candidates: list[Any], *, action_hash: str, tenant_id: str, now: datetime
    ) -> Approved | Denied:
        first_error: ApprovalError | None = None
        approved: Approved | None = None
        for candidate in candidates:
            try:
                verified = self.verify(candidate, action_hash=action_hash, tenant_id=tenant_id, now=now)
            except ApprovalError as exc:
                first_error = first_error or exc
                continue
            if verified.decision == "reject":
                # A valid signed "no" for this exact call wins over any "yes" (SPEC §13).
                reason = f": {verified.reason[:500]}" if verified.reason else ""
                return Denied(
                    ApprovalRejectedError(f"an approver rejected this call{reason}"), verified.to_receipt_json()
                )
            if approved is None:
                keep_until = format_timestamp(verified.consumed_until(self._skew))
                approved = Approved(verified.to_receipt_json(), verified.approval_id, keep_until)
        if approved is not None:
            return approved
        if first_error is None:  # pragma: no cover - candidates is never empty here
            raise ValueError("no candidate artifacts")
        return Denied(first_error, _presented(candidates[0]))

    def verify_grant(
        self, grant: Any, *, tenant_id: str, now: datetime, call: tuple[str, Mapping[str, Any]] | None = None
    ) -> tuple[GrantArtifact, VerifiedGrant]:
        """Verify one grant (SPEC §13, §5 order); ``call`` = ``(action, payload)`` also checks the match.

        Returns:
            ``(GrantArtifact, VerifiedGrant)``.

        Raises:
            ApprovalError: The first failed check.
        """
        return verify_grant(
            grant,
            keyring=self.keyring,
            tenant_id=tenant_id,
            audience=self._audience,
            now=now,
            clock_skew_seconds=self._skew,
            max_grant_ttl_seconds=self._max_grant_ttl,
            call=call,
        )

    async def _grant_decision(
        self, action_request: Mapping[str, Any], *, tenant_id: str, now: datetime
    ) -> Approved | Denied | None:
        """Approve by a stored grant with uses left (SPEC §13), or say why matching grants cannot serve.

        ``None`` when no stored grant covers the call. A covering grant that is used up gives
        ``approval_grant_exhausted``, else a revoked one ``approval_grant_revoked``. The use is
        consumed later, with the nonce claim; a concurrent call may still win the last use there.
        """
        rows = await anyio.to_thread.run_sync(self._store.grants_for, tenant_id, format_timestamp(now))
        call = (str(action_request.get("action")), dict(action_request.get("payload") or {}))
        exhausted: Denied | None = None
        revoked: Denied | None = None
        for row in rows:
            try:
                _, verified = self.verify_grant(json.loads(row.artifact), tenant_id=tenant_id, now=now, call=call)
            except (ApprovalError, ValueError):
                continue
            receipt = verified.to_receipt_json(None)
            if row.uses >= row.max_uses:
                exhausted = exhausted or Denied(
                    ApprovalGrantExhaustedError("the matching grant has no use left"), receipt, open_request=True
                )
            elif row.revoked_at is not None:
                revoked = revoked or Denied(
                    ApprovalGrantRevokedError("the matching grant was revoked"), receipt, open_request=True
                )
            else:
                keep = format_timestamp(shift(verified.expires_at, self._skew))
                return Approved(receipt, None, keep, grant_id=verified.grant_id)
        return exhausted or revoked

    async def _inbox_artifacts(self, tenant_id: str, action_hash: str) -> list[Any]:
        """Return the stored artifacts for this call's tenant only.

        Two tenants' calls can share an action_hash (same action, payload and nonce); another
        tenant's artifact must neither block this call nor reveal that tenant's name.
        """
        texts = await anyio.to_thread.run_sync(self._store.approval_artifacts, action_hash, tenant_id)
        artifacts = [json_object(json.loads(text)) for text in texts]
        return [item for item in artifacts if item is not None and item.get("tenant_id") == tenant_id]


def _presented(artifact: Any) -> dict[str, Any]:
    """Return what a receipt can say of a refused artifact.

    Its hash, and its claims, which the error code beside them marks as unverified.
    """
    fields: dict[str, Any] = artifact if isinstance(artifact, dict) else {}  # pyright: ignore[reportUnknownVariableType]
    try:
        artifact_hash: str | None = sha256_hex(canonicalize(artifact))
    except MalformedInputError:
        artifact_hash = None

    def text(name: str) -> str | None:
        value = fields.get(name)
        return value[:128] if isinstance(value, str) else None

    return {
        "method": "signed",
        "approval_id": text("approval_id"),
        "kid": text("kid"),
        "issued_by": text("issued_by"),
        "artifact_hash": artifact_hash,
    }
