"""The exception tree of openexec-mcp and the stable error codes of SPEC.md.

Every refusal the server makes is one of these classes; its class-level ``code`` is the stable
string that appears in result envelopes (``error.code``) and receipts (``error_code``). Clients
match on the code, never on the message. Messages say what was expected and what arrived, and
never echo configured secrets or the configured tenant.

The hierarchy::

    OpenExecError
    ├── InvalidRequestError          invalid_request       (SPEC §2, §10: nothing is recorded)
    │   ├── MalformedInputError      invalid_request       (a parse_* of untrusted bytes failed)
    │   └── UnknownActionError       unknown_action        (no tool of that name; HTTP 404)
    ├── NonceError                                         (SPEC §4)
    │   ├── NonceConflictError       nonce_conflict
    │   ├── InProgressError          in_progress
    │   └── OutcomeUnknownError      outcome_unknown
    ├── ApprovalError                                      (SPEC §5, one class per check)
    │   ├── ApprovalRequiredError    approval_required
    │   ├── ApprovalDeniedError      approval_denied       (policy ``deny``)
    │   ├── ApprovalDeclinedError    approval_declined     (elicitation declined or cancelled)
    │   ├── ApprovalMalformedError   approval_malformed
    │   ├── ApprovalUnknownKeyError  approval_unknown_key
    │   ├── ApprovalBadSignatureError approval_bad_signature
    │   ├── ApprovalIssuerMismatchError approval_issuer_mismatch
    │   ├── ApprovalTenantMismatchError approval_tenant_mismatch
    │   ├── ApprovalAudienceMismatchError approval_audience_mismatch
    │   ├── ApprovalNotYetValidError approval_not_yet_valid
    │   ├── ApprovalExpiredError     approval_expired
    │   ├── ApprovalTTLTooLongError  approval_ttl_too_long
    │   ├── ApprovalActionMismatchError approval_action_mismatch
    │   ├── ApprovalConsumedError    approval_consumed
    │   └── PolicyError              policy_error          (a policy rule's CEL ``when`` failed; SPEC §11)
    ├── ExecutionError                                     (the handler ran; status ``failed``)
    │   ├── HandlerError             handler_error
    │   ├── InvalidResultError       invalid_result
    │   ├── HandlerTimeoutError      handler_timeout
    │   ├── OperatorMarkedFailedError operator_marked_failed (``ledger resolve --mark-failed``)
    │   └── UpstreamError            upstream_error        (the upstream answered ``isError``; SPEC §11)
    ├── NotSentError                                       (nothing left the server; the nonce is released)
    │   └── UpstreamUnavailableError upstream_unavailable  (SPEC §11)
    ├── RateLimitedError             rate_limited          (nothing is recorded; HTTP 429)
    ├── ShuttingDownError            shutting_down         (draining on SIGTERM; HTTP 503)
    ├── StoreUnavailableError        store_unavailable
    ├── ResolutionRefusedError       resolution_refused    (``ledger resolve``: not an open indeterminate call)
    ├── VerificationError            verification_failed   (receipts, ledger; ``reason`` says why)
    └── ConfigError                  config_error          (CLI exit code 2)
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ApprovalActionMismatchError",
    "ApprovalAudienceMismatchError",
    "ApprovalBadSignatureError",
    "ApprovalConsumedError",
    "ApprovalDeclinedError",
    "ApprovalDeniedError",
    "ApprovalError",
    "ApprovalExpiredError",
    "ApprovalIssuerMismatchError",
    "ApprovalMalformedError",
    "ApprovalNotYetValidError",
    "ApprovalRequiredError",
    "ApprovalTTLTooLongError",
    "ApprovalTenantMismatchError",
    "ApprovalUnknownKeyError",
    "ConfigError",
    "ExecutionError",
    "HandlerError",
    "HandlerTimeoutError",
    "InProgressError",
    "InvalidRequestError",
    "InvalidResultError",
    "MalformedInputError",
    "NonceConflictError",
    "NonceError",
    "NotSentError",
    "OpenExecError",
    "OperatorMarkedFailedError",
    "OutcomeUnknownError",
    "PolicyError",
    "RateLimitedError",
    "ResolutionRefusedError",
    "ShuttingDownError",
    "StoreUnavailableError",
    "UnknownActionError",
    "UpstreamError",
    "UpstreamUnavailableError",
    "VerificationError",
]


class OpenExecError(Exception):
    """Base of every error openexec-mcp raises on purpose.

    Attributes:
        code: The stable error code of SPEC.md (class-level).
        message: A human-readable sentence; safe to show to the caller.
    """

    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        """Return the envelope's ``error`` object: ``{"code": str, "message": str}``."""
        return {"code": self.code, "message": self.message}


class InvalidRequestError(OpenExecError):
    """The request is not well formed (SPEC §2, §10). Nothing is recorded; the nonce stays free."""

    code = "invalid_request"


class MalformedInputError(InvalidRequestError):
    """A ``parse_*`` function was given bytes or values it cannot accept."""


class UnknownActionError(InvalidRequestError):
    """No action of that name is exposed by this server."""

    code = "unknown_action"


class NonceError(OpenExecError):
    """The nonce was already used (SPEC §4); the handler does not run."""


class NonceConflictError(NonceError):
    """The nonce was used for a different action_hash."""

    code = "nonce_conflict"


class InProgressError(NonceError):
    """The first call on this nonce is still running; retry later."""

    code = "in_progress"


class OutcomeUnknownError(NonceError):
    """The call's outcome is unknown (``indeterminate``); it is never re-run automatically.

    Raised for a nonce whose first call died mid-run, and by handlers whose request was sent but
    got no answer (timeout, crash, dropped connection, cancellation forwarded; SPEC §11, §12).
    """

    code = "outcome_unknown"


class ApprovalError(OpenExecError):
    """The call lacks a valid approval (SPEC §5). Nothing is consumed."""

    code = "approval_error"


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


class PolicyError(ApprovalError):
    """A matching policy rule's ``when`` errored or did not yield a bool: the call is denied (SPEC §11)."""

    code = "policy_error"


class ExecutionError(OpenExecError):
    """The handler ran and did not produce a usable result (status ``failed``)."""

    code = "handler_error"


class HandlerError(ExecutionError):
    """The handler raised. The message is generic: handler exception text stays in the server log."""

    code = "handler_error"


class InvalidResultError(ExecutionError):
    """The handler returned something that is not JSON within the limits of SPEC §2."""

    code = "invalid_result"


class HandlerTimeoutError(ExecutionError):
    """The handler ran longer than ``limits.handler_timeout_seconds``."""

    code = "handler_timeout"


class OperatorMarkedFailedError(ExecutionError):
    """An operator recorded an ``indeterminate`` call as failed (``ledger resolve --mark-failed``).

    Retries of its nonce replay this failure; nothing is re-run.
    """

    code = "operator_marked_failed"


class UpstreamError(ExecutionError):
    """The upstream MCP server answered the call with ``isError: true`` (SPEC §11): status ``failed``.

    Attributes:
        result: The upstream result as JSON, ``{"content": [...], "structuredContent": obj | None,
            "isError": True}``; kept in the envelope and covered by ``result_hash``.
    """

    code = "upstream_error"

    def __init__(self, message: str, *, result: object = None) -> None:
        super().__init__(message)
        self.result = result


class NotSentError(OpenExecError):
    """Nothing was sent to the remote side: the gate releases the nonce claim and records ``denied``."""

    code = "not_sent"


class UpstreamUnavailableError(NotSentError):
    """The upstream is not running or refused the connection; the call was not sent (SPEC §11)."""

    code = "upstream_unavailable"


class RateLimitedError(OpenExecError):
    """The tenant exceeded ``limits.rate_limit_per_second``; retry later.

    Nothing is recorded, so a flood of calls cannot flood the ledger.
    """

    code = "rate_limited"


class ShuttingDownError(OpenExecError):
    """The server is draining before it exits; nothing ran. Retry on another replica or later."""

    code = "shutting_down"


class StoreUnavailableError(OpenExecError):
    """The store did not answer; nothing ran."""

    code = "store_unavailable"


class ResolutionRefusedError(OpenExecError):
    """``ledger resolve`` refused: the call is unknown, not ``indeterminate`` (any more), or may not be re-run."""

    code = "resolution_refused"


class VerificationError(OpenExecError):
    """A receipt, proof or ledger failed verification.

    Attributes:
        reason: A short stable token saying which check failed (e.g. ``bad_signature``).
        seq: The ledger index concerned, when known.
    """

    code = "verification_failed"

    def __init__(self, reason: str, message: str, *, seq: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.seq = seq


class ConfigError(OpenExecError):
    """The configuration is invalid; the server refuses to start (CLI exit code 2)."""

    code = "config_error"
