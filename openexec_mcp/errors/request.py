"""The request is not well formed or names no action (SPEC §2, §10): refused before anything is recorded.

Import these from :mod:`openexec_mcp.errors`.
"""

from __future__ import annotations

from openexec_mcp.errors.base import OpenExecError

__all__ = ["InvalidRequestError", "MalformedInputError", "UnknownActionError"]


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
