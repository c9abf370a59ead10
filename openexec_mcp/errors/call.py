"""What became of a call that reached its action (SPEC §6, §10, §11, §12).

- :class:`ActionRefusedError`: the action refused it before sending anything (``denied``, 403);
- :class:`NotSentError`: nothing was sent, the nonce claim is released (``denied``, 503);
- :class:`ExecutionError`: the handler ran without a usable result (``failed``, 500);
- :class:`InternalError` (an unexpected error in the gate) and :class:`OutcomeNotRecordedError`
  (the handler ran, its outcome could not be stored): 500.

Import these from :mod:`openexec_mcp.errors`.
"""

from __future__ import annotations

from typing import Any

from openexec_mcp.errors.base import OpenExecError

__all__ = [
    "ActionRefusedError",
    "ExecutionError",
    "HandlerError",
    "HandlerTimeoutError",
    "InternalError",
    "InvalidResultError",
    "NotSentError",
    "OperatorMarkedFailedError",
    "OutcomeNotRecordedError",
    "RecipientNotAllowedError",
    "UpstreamError",
    "UpstreamUnavailableError",
    "UrlNotAllowedError",
]


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
