"""The exception tree of openexec-mcp and the stable error codes of SPEC.md.

Every refusal the server makes is one of these classes; its class-level ``code`` is the stable
string that appears in result envelopes (``error.code``) and receipts (``error_code``), and its
class-level ``http_status`` is the status of ``POST /execute`` (SPEC §8). Clients match on the
code, never on the message. Messages say what was expected and what arrived, and never echo
configured secrets, the configured tenant, store addresses or exception text (SPEC §10).

Abstract classes (no code of their own) group the leaves; each leaf's code is unique, except the
two ``invalid_request`` leaves (a parse failure is an invalid request). The hierarchy, with
``code`` and HTTP status::

    OpenExecError                                              (abstract)
    ├── InvalidRequestError          invalid_request       422 (SPEC §2, §10: nothing is recorded)
    │   ├── MalformedInputError      invalid_request       422 (a parse_* of untrusted bytes failed)
    │   └── UnknownActionError       unknown_action        404 (no tool of that name)
    ├── NonceError                                         409 (abstract; SPEC §4)
    │   ├── NonceConflictError       nonce_conflict
    │   ├── InProgressError          in_progress
    │   └── OutcomeUnknownError      outcome_unknown           (also: sent, and no answer came)
    ├── ApprovalError                                      403 (abstract; SPEC §5, one class per check)
    │   ├── ApprovalRequiredError    approval_required
    │   ├── ApprovalDeniedError      approval_denied           (policy ``deny``)
    │   ├── ApprovalDeclinedError    approval_declined         (elicitation declined or cancelled)
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
    │   ├── ApprovalRejectedError    approval_rejected         (SPEC §13: a signed reject decision)
    │   ├── ApprovalGrantExhaustedError approval_grant_exhausted (SPEC §13)
    │   ├── ApprovalGrantRevokedError approval_grant_revoked   (SPEC §13)
    │   └── PolicyError              policy_error              (a policy rule failed at call time, SPEC §11)
    ├── ActionRefusedError                                 403 (abstract: refused before anything was sent)
    │   ├── UrlNotAllowedError       url_not_allowed           (SPEC §12)
    │   └── RecipientNotAllowedError recipient_not_allowed     (SPEC §12)
    ├── NotSentError                                       503 (abstract: nothing left; the claim is released)
    │   └── UpstreamUnavailableError upstream_unavailable      (SPEC §11)
    ├── ExecutionError                                     500 (abstract: the handler ran; status ``failed``)
    │   ├── HandlerError             handler_error
    │   ├── InvalidResultError       invalid_result
    │   ├── HandlerTimeoutError      handler_timeout
    │   ├── UpstreamError            upstream_error            (the upstream answered ``isError``)
    │   └── OperatorMarkedFailedError operator_marked_failed   (``ledger resolve --mark-failed``)
    ├── InternalError                internal_error        500 (fail closed, on record: SPEC §10)
    ├── OutcomeNotRecordedError      outcome_not_recorded  500 (the handler ran; its outcome is not stored)
    ├── RateLimitedError             rate_limited          429 (nothing is recorded)
    ├── ActionSaturatedError         action_saturated      429 (no free worker for the action; nothing recorded)
    ├── ShuttingDownError            shutting_down         503 (draining on SIGTERM; nothing recorded)
    ├── StoreUnavailableError        store_unavailable     503 (the store did not answer; nothing ran)
    ├── UnauthorizedError            unauthorized          401
    ├── ForbiddenError               forbidden             403
    ├── NotFoundError                not_found             404
    ├── ResolutionRefusedError       resolution_refused        (``ledger resolve``)
    ├── VerificationError            verification_failed       (receipts, ledger; ``reason`` says why)
    └── ConfigError                  config_error              (CLI exit code 2)
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

__all__ = [
    "ActionRefusedError",
    "ActionSaturatedError",
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
    "ConfigError",
    "ExecutionError",
    "ForbiddenError",
    "HandlerError",
    "HandlerTimeoutError",
    "InProgressError",
    "InternalError",
    "InvalidRequestError",
    "InvalidResultError",
    "MalformedInputError",
    "NonceConflictError",
    "NonceError",
    "NotFoundError",
    "NotSentError",
    "OpenExecError",
    "OperatorMarkedFailedError",
    "OutcomeNotRecordedError",
    "OutcomeUnknownError",
    "PolicyError",
    "RateLimitedError",
    "RecipientNotAllowedError",
    "ResolutionRefusedError",
    "ShuttingDownError",
    "StoreUnavailableError",
    "UnauthorizedError",
    "UnknownActionError",
    "UpstreamError",
    "UpstreamUnavailableError",
    "UrlNotAllowedError",
    "VerificationError",
    "VerificationReason",
]

VerificationReason = Literal[
    # receipts (SPEC §7)
    "malformed",
    "wrong_payload_type",
    "unknown_key",
    "bad_signature",
    "bad_body",
    "not_canonical",
    # the ledger's chain and tree
    "seq_mismatch",
    "log_mismatch",
    "exec_id_mismatch",
    "broken_chain",
    "broken_prev",
    "gap",
    "hash_mismatch",
    "tree_mismatch",
    "size_mismatch",
    "checkpoint_ahead",
    "inconsistent_checkpoint",
    # Merkle proofs (RFC 9162) and proof texts (C2SP tlog-proof)
    "malformed_hash",
    "index_out_of_range",
    "wrong_proof_length",
    "root_mismatch",
    "size_regression",
    "empty_tree",
    "malformed_proof",
    "index_mismatch",
    # checkpoints and signed notes (C2SP tlog-checkpoint, signed-note)
    "malformed_note",
    "missing_signature",
    "malformed_checkpoint",
    "origin_mismatch",
    # witnesses and evidence bundles (SPEC §14, C2SP tlog-cosignature)
    "bad_cosignature",
    "quorum_not_met",
    "malformed_bundle",
    "untrusted_server_key",
    # POST /receipts/verify only (SPEC §8)
    "not_in_ledger",
    "unknown_exec_id",
    "receipt_mismatch",
    # a result envelope whose result its receipt does not cover (SPEC §6, §7); also POST /receipts/verify
    "result_mismatch",
]
"""Every ``reason`` a verification failure may carry: stable tokens, part of the wire contract
(``POST /receipts/verify``, ``receipt verify``, ``ledger verify``). Pinned by a test."""


class OpenExecError(Exception):
    """Base of every error openexec-mcp raises on purpose (abstract: raise a leaf).

    Attributes:
        code: The stable error code of SPEC.md (class-level; empty on abstract classes).
        http_status: The HTTP status of ``POST /execute`` for this error (class-level, SPEC §8).
        message: A human-readable sentence; safe to show to the caller.
    """

    code: ClassVar[str] = ""
    http_status: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        """Return the envelope's ``error`` object: ``{"code": str, "message": str}``."""
        return {"code": self.code, "message": self.message}


class InvalidRequestError(OpenExecError):
    """The request is not well formed (SPEC §2, §10). Nothing is recorded; the nonce stays free."""

    code = "invalid_request"
    http_status = 422


class MalformedInputError(InvalidRequestError):
    """A ``parse_*`` function was given bytes or values it cannot accept."""


class UnknownActionError(InvalidRequestError):
    """No action of that name is exposed by this server (refused before validation, no receipt)."""

    code = "unknown_action"
    http_status = 404


class NonceError(OpenExecError):
    """The nonce was already used (SPEC §4); the handler does not run (abstract)."""

    http_status = 409


class NonceConflictError(NonceError):
    """The nonce was used for a different action_hash."""

    code = "nonce_conflict"


class InProgressError(NonceError):
    """The first call on this nonce is still running; retry later."""

    code = "in_progress"


class OutcomeUnknownError(NonceError):
    """The call's outcome is unknown (``indeterminate``); it is never re-run by itself.

    Raised by a handler when its request was sent (to an upstream or a remote service) and no
    answer came: the gate records the call ``indeterminate`` at once (SPEC §6, §11, §12).
    """

    code = "outcome_unknown"


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


class ActionRefusedError(OpenExecError):
    """The action refused the call before sending anything (abstract; its ``precheck`` raised).

    The gate records ``denied`` with a receipt; neither the nonce nor an approval is consumed.
    """

    http_status = 403


class UrlNotAllowedError(ActionRefusedError):
    """``http_request``: the URL or method is not allowed by ``[actions.http_request]`` (SPEC §12)."""

    code = "url_not_allowed"


class RecipientNotAllowedError(ActionRefusedError):
    """``send_email``: a recipient is outside ``allowed_recipients`` (SPEC §12)."""

    code = "recipient_not_allowed"


class NotSentError(OpenExecError):
    """Raised by a handler when nothing was sent (abstract): the gate releases the nonce claim.

    The call is recorded ``denied`` with a receipt; the nonce and the approval stay free, so a
    retry with the same nonce may succeed (SPEC §11).
    """

    http_status = 503


class UpstreamUnavailableError(NotSentError):
    """The upstream MCP server is not running or refused the connection; nothing was sent."""

    code = "upstream_unavailable"


class ExecutionError(OpenExecError):
    """The handler ran and did not produce a usable result: status ``failed`` (abstract).

    Attributes:
        result: The JSON result to keep with the failure (covered by ``result_hash``), or
            ``None``. Only :class:`UpstreamError` sets it.
    """

    http_status = 500
    result: Any = None


class HandlerError(ExecutionError):
    """The handler raised. The message is generic: handler exception text stays in the server log."""

    code = "handler_error"


class InvalidResultError(ExecutionError):
    """The handler returned something that is not JSON within the limits of SPEC §2."""

    code = "invalid_result"


class HandlerTimeoutError(ExecutionError):
    """The handler ran longer than ``limits.handler_timeout_seconds``."""

    code = "handler_timeout"


class UpstreamError(ExecutionError):
    """The upstream answered the call with ``isError: true`` (SPEC §11); its result is kept.

    Args:
        message: What to tell the caller.
        result: The upstream result as JSON (``{"content", "structuredContent", "isError"}``).
    """

    code = "upstream_error"

    def __init__(self, message: str, *, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


class OperatorMarkedFailedError(ExecutionError):
    """An operator recorded an ``indeterminate`` call as failed (``ledger resolve --mark-failed``).

    Retries of its nonce replay this failure; nothing is re-run.
    """

    code = "operator_marked_failed"


class InternalError(OpenExecError):
    """An unexpected exception inside the gate (SPEC §10: fail closed, on record).

    ``denied`` when it happened before the handler started, ``failed`` after; with a receipt
    whenever one could be written. The message never carries the exception text.
    """

    code = "internal_error"
    http_status = 500


class OutcomeNotRecordedError(OpenExecError):
    """The handler ran but its outcome could not be recorded (the store failed afterwards).

    The opposite of :class:`StoreUnavailableError` for a caller: something may have happened.
    The claim stays ``started``: the nonce answers ``in_progress``, then ``outcome_unknown``.
    """

    code = "outcome_not_recorded"
    http_status = 500


class RateLimitedError(OpenExecError):
    """The tenant exceeded ``limits.rate_limit_per_second``; retry later.

    Nothing is recorded, so a flood of calls cannot flood the ledger.
    """

    code = "rate_limited"
    http_status = 429


class ActionSaturatedError(OpenExecError):
    """Every worker of this action is busy (or abandoned after a timeout); retry later.

    Refused at admission: nothing is recorded and the nonce stays free.
    """

    code = "action_saturated"
    http_status = 429


class ShuttingDownError(OpenExecError):
    """The server is draining before it exits; nothing ran. Retry on another replica or later."""

    code = "shutting_down"
    http_status = 503


class StoreUnavailableError(OpenExecError):
    """The store did not answer; nothing ran."""

    code = "store_unavailable"
    http_status = 503


class UnauthorizedError(OpenExecError):
    """No valid bearer token came with the request (SPEC §8)."""

    code = "unauthorized"
    http_status = 401


class ForbiddenError(OpenExecError):
    """The token lacks the scope, or the request is cross-site or DNS-rebound (SPEC §8, §10)."""

    code = "forbidden"
    http_status = 403


class NotFoundError(OpenExecError):
    """The named receipt, request or resource does not exist (for this tenant)."""

    code = "not_found"
    http_status = 404


class ResolutionRefusedError(OpenExecError):
    """``ledger resolve`` refused: the call is unknown, not ``indeterminate`` (any more), or may not be re-run."""

    code = "resolution_refused"
    http_status = 409


class VerificationError(OpenExecError):
    """A receipt, proof or ledger failed verification.

    Attributes:
        reason: A :data:`VerificationReason`: which check failed (e.g. ``bad_signature``).
        seq: The ledger index concerned, when known.
    """

    code = "verification_failed"
    http_status = 422

    def __init__(self, reason: VerificationReason, message: str, *, seq: int | None = None) -> None:
        super().__init__(message)
        self.reason: VerificationReason = reason
        self.seq = seq


class ConfigError(OpenExecError):
    """The configuration is invalid; the server refuses to start (CLI exit code 2)."""

    code = "config_error"
