"""MCP over stdio with the raw-bytes check in front of the SDK's parser (SPEC §2, §10).

The SDK's ``stdio_server`` takes explicit stdin and stdout streams; this module hands it the
process's stdin, line by line through :func:`~openexec_mcp.transport.ingress.guarded_lines`, and a
stdout whose every line is written under one lock, so the check can answer a request the SDK
could not read (``-32600`` / ``-32700``) without tearing the SDK's own lines. As the SDK does for
its own claim, fd 0 points at the null device and fd 1 at stderr while serving, so a handler or a
child process can neither read protocol bytes nor corrupt the answers.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from io import TextIOWrapper
from typing import Any, BinaryIO

import anyio
import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server

from openexec_mcp.transport.ingress import IngressCheck, guarded_lines

__all__ = ["run_stdio"]


class _LineWriter:
    """The stdout ``stdio_server`` writes to (``write`` of one whole line, then ``flush``)."""

    def __init__(self, wire: BinaryIO) -> None:
        self._wire = wire
        self._lock = anyio.Lock()

    async def write(self, text: str) -> int:
        """Write ``text`` (one or more whole lines) atomically with respect to other writers."""
        await self.write_bytes(text.encode("utf-8"))
        return len(text)

    async def write_bytes(self, data: bytes) -> None:
        """Write one line (``data`` without its newline is accepted too) and flush it."""
        line = data if data.endswith(b"\n") else data + b"\n"
        async with self._lock:
            await anyio.to_thread.run_sync(self._write_sync, line)

    async def flush(self) -> None:
        """Lines are flushed as they are written."""

    def _write_sync(self, data: bytes) -> None:
        self._wire.write(data)
        self._wire.flush()


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
    wire_in, wire_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    # closefd=False: the SDK's reader thread may still block on the descriptor after we return.
    text = TextIOWrapper(os.fdopen(wire_in, "rb", closefd=False), encoding="utf-8", errors="replace")
    stdout = _LineWriter(os.fdopen(wire_out, "wb", closefd=False))
    stdin = _GuardedStdin(guarded_lines(anyio.wrap_file(text).__aiter__(), check, stdout.write_bytes))
    try:
        async with stdio_server(stdin=stdin, stdout=stdout) as (read_stream, write_stream):  # pyright: ignore[reportArgumentType]
            server = mcp_server._lowlevel_server  # pyright: ignore[reportPrivateUsage]
            await server.run(read_stream, write_stream, server.create_initialization_options())
    finally:
        os.dup2(wire_in, 0)
        os.dup2(wire_out, 1)
