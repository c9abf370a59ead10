"""A real ``openexec-mcp governance serve`` subprocess and a real Chromium for the console tests."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from oe_testing.http_server import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip
APPROVER_TOKEN = "approver-token-for-tests-only-0123456789"


def require_chromium() -> str:
    """Return the system Chromium; skip without it (a failure under ``CI=true``: .ci/run installs it)."""
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if path is None:
        message = "Chromium is not installed (apt-get install -y chromium); the console browser tests need it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        import playwright  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("the playwright package is missing (pip install -e .[dev])")
        pytest.skip("the playwright package is missing (pip install -e .[dev])")
    return path


@dataclass(frozen=True)
class GovernanceProcess:
    """A running governance service: its URL and log."""

    url: str
    log: Path


def governance_config(path: Path, *, notify: str = "", tenants: str = '["*"]') -> Path:
    """Write a config file with one approver (token :data:`APPROVER_TOKEN`) and optional notify entries."""
    digest = hashlib.sha256(APPROVER_TOKEN.encode()).hexdigest()
    path.write_text(
        f'[[governance.approvers]]\nsha256 = "{digest}"\nname = "Ada Approver"\ntenants = {tenants}\n{notify}'
    )
    return path


@contextmanager
def governance_server(
    root: Path, key: Path, servers: list[str], config: Path, env: dict[str, str] | None = None,
    poll_seconds: float = 0.5, extra_args: tuple[str, ...] = (),
) -> Iterator[GovernanceProcess]:  # fmt: skip
    """Start ``openexec-mcp governance serve`` on a free loopback port; stop it on exit."""
    port = free_port()
    log = root / f"governance-{port}.log"
    server_args = [arg for url in servers for arg in ("--server", url)]
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENEXEC_", "CLAWSHIELD_"))}
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "openexec_mcp", "governance", "serve", "--config", str(config), "--key", str(key),
             "--port", str(port), "--poll-seconds", str(poll_seconds), *server_args, *extra_args],
            env={**base_env, **(env or {})}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=handle,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"governance exited {process.returncode}: {log.read_text()[-2000:]}")
                try:
                    if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"governance not ready: {log.read_text()[-2000:]}")
                time.sleep(0.05)
            yield GovernanceProcess(url, log)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
