"""openexec-mcp: an MCP server that exposes registered actions as guarded tools."""

from openexec_mcp._version import __version__

__all__ = ["__version__"]
