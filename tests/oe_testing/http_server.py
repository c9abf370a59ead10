"""A real ``openexec-mcp serve --transport http`` subprocess on a free loopback port."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from openexec_mcp.runtime import Runtime
from openexec_mcp.transport.http.app import build_http_app

READY_TIMEOUT_SECONDS = 30.0
POLL_INTERVAL_SECONDS = 0.05


@dataclass(frozen=True)
class HttpServer:
    """A running server: its base URL, state directory, counter file and stderr log."""

    base_url: str
    state_dir: Path
    counter: Path
    log: Path

    @property
    def mcp_url(self) -> str:
        return self.base_url + "/mcp"

    @property
    def sse_url(self) -> str:
        return self.base_url + "/sse"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_ready(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``GET /ready`` until it answers 200, the process dies, or the deadline passes."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}: {log.read_text()[-2000:]}")
            try:
                if client.get(base_url + "/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(POLL_INTERVAL_SECONDS)  # bounded readiness polling, not a fixed wait
    raise RuntimeError(f"server not ready after {READY_TIMEOUT_SECONDS}s: {log.read_text()[-2000:]}")


@contextmanager
def running_http_server(env: dict[str, str], root: Path, *extra_args: str) -> Iterator[HttpServer]:
    """Start the server with ``env`` (see ``conftest.server_env``); stop and reap it on exit."""
    from oe_testing.processes import http_server  # processes imports this module

    with http_server(env, root, *extra_args) as server:
        yield HttpServer(
            server.base_url, Path(env["OPENEXEC_STATE_DIR"]), Path(env["OPENEXEC_TEST_COUNTER"]), server.log
        )


def app_client(runtime: Runtime) -> httpx.AsyncClient:
    """An HTTP client on the in-process app of ``runtime`` (no lifespan: the plain routes only)."""
    app = build_http_app(runtime, host="127.0.0.1", port=8000)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")
