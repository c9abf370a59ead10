"""Real server and CLI processes for the crash, drain, race and outage tests.

Unlike ``http_server.running_http_server``, :func:`http_server` hands out the process itself, so a
test can kill it, signal it, or watch it die by its own hand (fault injection), and start another on
the same state. Every process is reaped when its ``with`` block ends.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from oe_testing.http_server import free_port, wait_until_ready

WAIT_SECONDS = 30.0
CRASH_ACTION_MODULES = '["oe_testing.actions", "oe_testing.crash_actions"]'


@dataclass(frozen=True)
class ServerProcess:
    """A running ``serve --transport http`` process."""

    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def execute(self, action: str, payload: dict[str, Any], nonce: str, timeout: float = 60.0) -> httpx.Response:
        body = {"action": action, "payload": payload, "nonce": nonce}
        return httpx.post(self.base_url + "/execute", json=body, timeout=timeout)


def stop(process: subprocess.Popen[Any]) -> None:
    """Terminate ``process`` if it still runs, and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@contextmanager
def http_server(env: dict[str, str], root: Path, *extra_args: str, name: str = "server") -> Iterator[ServerProcess]:
    """Start ``openexec-mcp serve --transport http`` on a free loopback port; reap it on exit."""
    port = free_port()
    log = root / f"{name}-{port}.log"
    with log.open("wb") as log_handle:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "openexec_mcp",
                "serve",
                "--transport",
                "http",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *extra_args,
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log_handle,
        )
        try:
            base_url = f"http://127.0.0.1:{port}"
            wait_until_ready(base_url, process, log)
            yield ServerProcess(process, base_url, log)
        finally:
            stop(process)


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(env: dict[str, str], *args: str) -> CliResult:
    """Run ``openexec-mcp ARGS`` to completion."""
    completed = subprocess.run(
        [sys.executable, "-m", "openexec_mcp", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    return CliResult(completed.returncode, completed.stdout, completed.stderr)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS) -> None:
    """Poll ``predicate`` until it holds (bounded polling, not a fixed wait); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def error_code(response: httpx.Response) -> str | None:
    error = response.json().get("error")
    return None if error is None else str(error["code"])


def ready_status(base_url: str) -> int | None:
    """``GET /ready``'s status, or ``None`` when nothing answers."""
    try:
        return httpx.get(base_url + "/ready", timeout=5).status_code
    except httpx.TransportError:
        return None


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
