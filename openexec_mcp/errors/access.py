"""Refusals of the HTTP surface (SPEC §8, §10): no valid token (401), no scope (403), no such thing (404).

Import these from :mod:`openexec_mcp.errors`.
"""

from __future__ import annotations

from openexec_mcp.errors.base import OpenExecError

__all__ = ["ForbiddenError", "NotFoundError", "UnauthorizedError"]


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
