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
    ├── InputRoundExpiredError       input_round_expired   410 (a 2026-07-28 retry of no open round, SPEC §11)
    ├── StoreUnavailableError        store_unavailable     503 (the store did not answer; nothing ran)
    ├── UnauthorizedError            unauthorized          401
    ├── ForbiddenError               forbidden             403
    ├── NotFoundError                not_found             404
    ├── ResolutionRefusedError       resolution_refused        (``ledger resolve``)
    ├── VerificationError            verification_failed       (receipts, ledger; ``reason`` says why)
    └── ConfigError                  config_error              (CLI exit code 2)

The classes live in one module per family, each class beside its abstract parent; import every
one of them from ``openexec_mcp.errors`` (the submodules are not an import path to rely on):

- :mod:`.base`: ``OpenExecError``, the root;
- :mod:`.request`: ``InvalidRequestError`` and its leaves;
- :mod:`.nonce`: ``NonceError`` and its leaves;
- :mod:`.approval`: ``ApprovalError`` and its leaves, ``PolicyError`` among them;
- :mod:`.call`: the outcome of a call that reached its action: ``ActionRefusedError``,
  ``NotSentError``, ``ExecutionError`` and their leaves, ``InternalError``,
  ``OutcomeNotRecordedError``;
- :mod:`.server`: admission and start-up: ``RateLimitedError``, ``ActionSaturatedError``,
  ``ShuttingDownError``, ``InputRoundExpiredError``, ``StoreUnavailableError``, ``ConfigError``;
- :mod:`.access`: the HTTP surface's ``UnauthorizedError``, ``ForbiddenError``, ``NotFoundError``;
- :mod:`.ledger`: ``VerificationError`` with :data:`VerificationReason`, ``ResolutionRefusedError``.

A new class goes in the module of its abstract parent (a new top-level leaf, in the family it
belongs to), and into ``__all__`` below.
"""

from __future__ import annotations

from openexec_mcp.errors.access import ForbiddenError, NotFoundError, UnauthorizedError
from openexec_mcp.errors.approval import (
    ApprovalActionMismatchError,
    ApprovalAudienceMismatchError,
    ApprovalBadSignatureError,
    ApprovalConsumedError,
    ApprovalDeclinedError,
    ApprovalDeniedError,
    ApprovalError,
    ApprovalExpiredError,
    ApprovalGrantExhaustedError,
    ApprovalGrantRevokedError,
    ApprovalIssuerMismatchError,
    ApprovalMalformedError,
    ApprovalNotYetValidError,
    ApprovalRejectedError,
    ApprovalRequiredError,
    ApprovalTenantMismatchError,
    ApprovalTTLTooLongError,
    ApprovalUnknownKeyError,
    PolicyError,
)
from openexec_mcp.errors.base import OpenExecError
from openexec_mcp.errors.call import (
    ActionRefusedError,
    ExecutionError,
    HandlerError,
    HandlerTimeoutError,
    InternalError,
    InvalidResultError,
    NotSentError,
    OperatorMarkedFailedError,
    OutcomeNotRecordedError,
    RecipientNotAllowedError,
    UpstreamError,
    UpstreamUnavailableError,
    UrlNotAllowedError,
)
from openexec_mcp.errors.ledger import ResolutionRefusedError, VerificationError, VerificationReason
from openexec_mcp.errors.nonce import InProgressError, NonceConflictError, NonceError, OutcomeUnknownError
from openexec_mcp.errors.request import InvalidRequestError, MalformedInputError, UnknownActionError
from openexec_mcp.errors.server import (
    ActionSaturatedError,
    ConfigError,
    InputRoundExpiredError,
    RateLimitedError,
    ShuttingDownError,
    StoreUnavailableError,
)

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
    "InputRoundExpiredError",
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
