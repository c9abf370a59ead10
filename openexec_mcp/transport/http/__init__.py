"""The HTTP application: MCP over streamable HTTP and SSE plus the routes of SPEC §8."""
