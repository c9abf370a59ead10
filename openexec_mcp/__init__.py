"""openexec-mcp: an MCP server that exposes registered actions as guarded tools.

The public surface is exactly ``__all__`` (pinned by a test): the ``@action`` decorator, the
:class:`Action` type, and the error tree of :mod:`openexec_mcp.errors`.
"""

from openexec_mcp._version import __version__
from openexec_mcp.errors import (
    ApprovalError,
    ConfigError,
    ExecutionError,
    InvalidRequestError,
    NonceError,
    OpenExecError,
    StoreUnavailableError,
    VerificationError,
)
from openexec_mcp.registry import Action, action

__all__ = [
    "Action",
    "ApprovalError",
    "ConfigError",
    "ExecutionError",
    "InvalidRequestError",
    "NonceError",
    "OpenExecError",
    "StoreUnavailableError",
    "VerificationError",
    "__version__",
    "action",
]
