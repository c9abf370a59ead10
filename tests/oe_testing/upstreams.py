"""Upstream MCP servers for the guarded-proxy tests: the Python fixture over stdio and HTTP.

``stdio_settings`` makes an ``[[upstreams]]`` table that launches ``oe_testing.upstream_server``
as a subprocess; ``http_upstream`` starts it over streamable HTTP (and SSE) on a free loopback port
and reaps it on exit.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oe_testing.http_server import free_port
from oe_testing.processes import stop
from oe_testing.upstream_server import wait_for_port
from openexec_mcp.upstream.config import UpstreamSettings

TESTS_DIR = Path(__file__).resolve().parent.parent


def server_args(counter_dir: Path, *, legacy_only: bool = False) -> list[str]:
    args = ["-m", "oe_testing.upstream_server", "--counter-dir", str(counter_dir)]
    return [*args, "--legacy-only"] if legacy_only else args


def stdio_settings(counter_dir: Path, *, name: str = "t", legacy_only: bool = False, **fields: Any) -> UpstreamSettings:
    """A stdio upstream running the fixture server (its counter in ``counter_dir``)."""
    return UpstreamSettings(
        name=name,
        command=sys.executable,
        args=server_args(counter_dir, legacy_only=legacy_only),
        env={"PYTHONPATH": str(TESTS_DIR)},
        **fields,
    )


@dataclass(frozen=True)
class HttpUpstream:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def mcp_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def sse_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/sse"

    def settings(self, *, name: str = "h", transport: str = "streamable-http", **fields: Any) -> UpstreamSettings:
        url = self.sse_url if transport == "sse" else self.mcp_url
        return UpstreamSettings(name=name, url=url, transport=transport, **fields)  # type: ignore[arg-type]


@contextmanager
def http_upstream(counter_dir: Path, *, legacy_only: bool = False, port: int | None = None) -> Iterator[HttpUpstream]:
    """Serve the fixture over streamable HTTP and SSE on 127.0.0.1 (a free port); reap it on exit."""
    port = port or free_port()
    log = counter_dir.parent / f"upstream-http-{port}.log"
    counter_dir.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, *server_args(counter_dir, legacy_only=legacy_only), "--http", str(port)],
            stdout=handle, stderr=subprocess.STDOUT, env={"PYTHONPATH": str(TESTS_DIR), "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
    try:
        wait_for_port(port)
        yield HttpUpstream(process, port, log)
    finally:
        stop(process)
