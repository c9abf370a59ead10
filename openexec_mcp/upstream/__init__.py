"""Guarded upstream MCP servers (SPEC §11): config, connections, and their tools as actions."""

from openexec_mcp.upstream.actions import UpstreamAction, actions_for
from openexec_mcp.upstream.config import UpstreamSettings
from openexec_mcp.upstream.connection import UpstreamConnection, result_json
from openexec_mcp.upstream.hooks import CallHooks, current_hooks, use_hooks
from openexec_mcp.upstream.manager import UpstreamManager

__all__ = [
    "CallHooks",
    "UpstreamAction",
    "UpstreamConnection",
    "UpstreamManager",
    "UpstreamSettings",
    "actions_for",
    "current_hooks",
    "result_json",
    "use_hooks",
]
