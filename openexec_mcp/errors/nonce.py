"""The nonce was already used (SPEC §4): the handler does not run; HTTP 409.

Import these from :mod:`openexec_mcp.errors`.
"""

from __future__ import annotations

from openexec_mcp.errors.base import OpenExecError

__all__ = ["InProgressError", "NonceConflictError", "NonceError", "OutcomeUnknownError"]


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
