"""Real CLI and server processes: the one CLI runner, and servers for crash, race and outage tests.

Unlike ``http_server.running_http_server``, :func:`http_server` hands out the process itself, so a
test can kill it, signal it, or watch it die by its own hand (fault injection), and start another on
the same state. Every process is reaped when its ``with`` block ends.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from oe_testing.http_server import free_port, wait_until_ready

WAIT_SECONDS = 30.0
CLI_TIMEOUT_SECONDS = 120.0
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


Cli = Callable[..., subprocess.CompletedProcess[str]]
"""A CLI runner taking ``ARGS``: :func:`run_cli` bound to an environment, or a ``cli`` fixture."""


def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    expect: int | None = None,
    timeout: float = CLI_TIMEOUT_SECONDS,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m openexec_mcp ARGS`` (SPEC §9) to completion in a subprocess.

    ``env`` is the whole environment (usually ``conftest.server_env``; ``None`` inherits this
    process's); ``input`` is written to stdin, which is otherwise closed (``/dev/null``). Returns the
    finished process with text stdout and stderr. With ``expect`` set, raises ``AssertionError``
    (naming stderr) unless the exit code is ``expect``; raises ``subprocess.TimeoutExpired`` after
    ``timeout`` seconds.
    """
    completed = subprocess.run(
        [sys.executable, "-m", "openexec_mcp", *args],
        env=None if env is None else dict(env),
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if expect is not None:
        assert completed.returncode == expect, f"exit {completed.returncode}, not {expect}: {completed.stderr}"
    return completed


def published_keys(env: Mapping[str, str]) -> dict[str, Any]:
    """The ``keys public`` document (SPEC §8 ``GET /keys`` shape) for the state dir in ``env``.

    Raises ``AssertionError`` when the command does not exit 0.
    """
    document: dict[str, Any] = json.loads(run_cli("keys", "public", env=env, expect=0).stdout)
    return document


def run_cli_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``openexec_mcp.cli.main(ARGS)`` in this process: the same entry point as :func:`run_cli`.

    About a second cheaper per call than a subprocess, for the larger matrices. The environment
    is this process's (set it with ``monkeypatch``); stdout and stderr are what ``main`` printed,
    taken from ``capsys``. Returns the same shape as :func:`run_cli`.
    """
    from openexec_mcp.cli import main  # here: the subprocess helpers above never import the package

    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(["openexec-mcp", *args], code, captured.out, captured.err)


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
