"""MCP over stdio with the raw-bytes check in front of the SDK's parser (SPEC §2, §10).

The SDK's ``stdio_server`` takes an explicit stdin stream; this module hands it the process's
stdin, line by line through :func:`~openexec_mcp.transport.ingress.guarded_lines`. As the SDK does
for its own claim, fd 0 is pointed at the null device while serving, so a handler or a child
process can never read (steal) protocol bytes; stdout is left to the SDK's own claim.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from io import TextIOWrapper
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server

from openexec_mcp.transport.ingress import IngressCheck, guarded_lines

__all__ = ["run_stdio"]


class _GuardedStdin:
    """The async line iterator ``stdio_server`` reads (it only ever iterates its ``stdin``)."""

    def __init__(self, lines: AsyncIterator[str]) -> None:
        self._lines = lines

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines


async def run_stdio(mcp_server: MCPServer[Any], check: IngressCheck) -> None:
    """Serve ``mcp_server`` over stdin/stdout until EOF, every frame checked first.

    Args:
        mcp_server: The server (see :func:`~openexec_mcp.transport.mcp.build_mcp_server`).
        check: The raw-bytes check; the same object seals the markers its gate extension reads.
    """
    wire = os.dup(0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    # closefd=False: the SDK's reader thread may still block on the descriptor after we return.
    text = TextIOWrapper(os.fdopen(wire, "rb", closefd=False), encoding="utf-8", errors="replace")
    stdin = _GuardedStdin(guarded_lines(anyio.wrap_file(text).__aiter__(), check))
    try:
        async with stdio_server(stdin=stdin) as (read_stream, write_stream):  # pyright: ignore[reportArgumentType]
            server = mcp_server._lowlevel_server  # pyright: ignore[reportPrivateUsage]
            await server.run(read_stream, write_stream, server.create_initialization_options())
    finally:
        os.dup2(wire, 0)
