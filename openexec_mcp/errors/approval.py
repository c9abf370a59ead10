"""The call lacks a valid approval (SPEC §5, §11, §13): one class per check; HTTP 403.

Import these from :mod:`openexec_mcp.errors`.
"""

from __future__ import annotations

from openexec_mcp.errors.base import OpenExecError

__all__ = [
    "ApprovalActionMismatchError",
    "ApprovalAudienceMismatchError",
    "ApprovalBadSignatureError",
    "ApprovalConsumedError",
    "ApprovalDeclinedError",
    "ApprovalDeniedError",
    "ApprovalError",
    "ApprovalExpiredError",
    "ApprovalGrantExhaustedError",
    "ApprovalGrantRevokedError",
    "ApprovalIssuerMismatchError",
    "ApprovalMalformedError",
    "ApprovalNotYetValidError",
    "ApprovalRejectedError",
    "ApprovalRequiredError",
    "ApprovalTTLTooLongError",
    "ApprovalTenantMismatchError",
    "ApprovalUnknownKeyError",
    "PolicyError",
]


class ApprovalError(OpenExecError):
    """The call lacks a valid approval (SPEC §5). Nothing is consumed (abstract)."""

    http_status = 403


class ApprovalRequiredError(ApprovalError):
    """The policy needs an approval that the call does not carry."""

    code = "approval_required"


class ApprovalDeniedError(ApprovalError):
    """The policy for this action is ``deny``."""

    code = "approval_denied"


class ApprovalDeclinedError(ApprovalError):
    """The user declined or cancelled the elicitation."""

    code = "approval_declined"


class ApprovalMalformedError(ApprovalError):
    """The approval artifact is not well formed (fields, timestamps, base64)."""

    code = "approval_malformed"


class ApprovalUnknownKeyError(ApprovalError):
    """No usable keyring entry for the artifact's ``kid`` (unknown, revoked, outside its window)."""

    code = "approval_unknown_key"


class ApprovalBadSignatureError(ApprovalError):
    """The artifact's signature does not verify under the keyring entry."""

    code = "approval_bad_signature"


class ApprovalIssuerMismatchError(ApprovalError):
    """The keyring entry does not accept the artifact's ``issued_by``."""

    code = "approval_issuer_mismatch"


class ApprovalTenantMismatchError(ApprovalError):
    """The artifact was issued for another tenant."""

    code = "approval_tenant_mismatch"


class ApprovalAudienceMismatchError(ApprovalError):
    """The artifact was issued for another server (``audience``)."""

    code = "approval_audience_mismatch"


class ApprovalNotYetValidError(ApprovalError):
    """``issued_at`` is later than now plus the clock skew."""

    code = "approval_not_yet_valid"


class ApprovalExpiredError(ApprovalError):
    """Now is later than ``expires_at`` plus the clock skew."""

    code = "approval_expired"


class ApprovalTTLTooLongError(ApprovalError):
    """``expires_at - issued_at`` exceeds ``approvals.max_ttl_seconds``."""

    code = "approval_ttl_too_long"


class ApprovalActionMismatchError(ApprovalError):
    """The artifact's ``action_hash`` is not the hash of this call."""

    code = "approval_action_mismatch"


class ApprovalConsumedError(ApprovalError):
    """The artifact's ``approval_id`` has already executed a call."""

    code = "approval_consumed"


class ApprovalRejectedError(ApprovalError):
    """A valid signed ``reject`` decision covers this action_hash until it expires (SPEC §13)."""

    code = "approval_rejected"


class ApprovalGrantExhaustedError(ApprovalError):
    """The matching grant has no use left (SPEC §13)."""

    code = "approval_grant_exhausted"


class ApprovalGrantRevokedError(ApprovalError):
    """The matching grant was revoked (SPEC §13)."""

    code = "approval_grant_revoked"


class PolicyError(ApprovalError):
    """A policy rule's ``when`` expression failed at call time: the call is denied (SPEC §11)."""

    code = "policy_error"
