"""The root of the exception tree: :class:`OpenExecError` (abstract; SPEC §6, §8, §10).

Import it, like every error class, from :mod:`openexec_mcp.errors`.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["OpenExecError"]


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
