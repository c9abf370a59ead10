"""Transports: MCP (stdio, streamable HTTP, legacy SSE) and the plain HTTP routes of SPEC §8.

Each adapts its wire format to :class:`openexec_mcp.gate.pipeline.Gate` and back; none decides
anything the gate decides.
"""
