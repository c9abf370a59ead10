"""An independent MCP client: the MCP Inspector CLI (npm) against ``openexec-mcp serve`` over stdio.

Skipped, with the reason, when ``npx`` is missing or the npm registry cannot be reached; runs
whenever it can. The inspector version is pinned so a new release cannot change the output format
under the test. Version 2.x starts the server with a minimal environment, so the server's
variables are passed explicitly with ``-e``.

Exit codes of the inspector CLI: 0 success, 5 when the tool result has ``isError``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import server_env
from oe_testing import verifier
from oe_testing.actions import executions
from oe_testing.processes import published_keys

INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"
SERVER_VARIABLES = ("OPENEXEC_STATE_DIR", "OPENEXEC_ACTIONS__MODULES", "OPENEXEC_TEST_COUNTER", "PYTHONPATH")

pytestmark = pytest.mark.timeout(300)  # the first run downloads the inspector


@pytest.fixture(scope="module")
def npx() -> str:
    npx = shutil.which("npx")
    npm = shutil.which("npm")
    if npx is None or npm is None:
        pytest.skip("npx/npm not installed: the MCP Inspector CLI cannot run")
    try:
        probe = subprocess.run([npm, "view", INSPECTOR, "version"], capture_output=True, text=True, timeout=90)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"npm registry unreachable ({type(exc).__name__}): cannot fetch {INSPECTOR}")
    if probe.returncode != 0 or not probe.stdout.strip():
        pytest.skip(f"npm registry unreachable or {INSPECTOR} unknown: {probe.stderr.strip()[-200:]}")
    return npx


def inspector(npx: str, env: dict[str, str], *method_args: str) -> tuple[int, Any]:
    """Run one inspector CLI request against a fresh ``openexec-mcp serve`` stdio process."""
    passed = [arg for name in SERVER_VARIABLES for arg in ("-e", f"{name}={env[name]}")]
    completed = subprocess.run(
        [npx, "-y", INSPECTOR, "--cli", *passed, sys.executable, "-m", "openexec_mcp", "serve", *method_args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    try:
        output = json.loads(completed.stdout)
    except ValueError:
        pytest.fail(f"inspector exited {completed.returncode} without JSON: {completed.stderr[-1500:]}")
    return completed.returncode, output


def tool_call(name: str, **arguments: str) -> list[str]:
    """The inspector arguments of ``tools/call`` (``--tool-arg key=value`` per argument)."""
    args = ["--method", "tools/call", "--tool-name", name]
    for key, value in arguments.items():
        args += ["--tool-arg", f"{key}={value}"]
    return args


def test_inspector_lists_guarded_tools(npx: str, state_dir: Path) -> None:
    code, listing = inspector(npx, server_env(state_dir), "--method", "tools/list")
    assert code == 0
    tools = {tool["name"]: tool for tool in listing["tools"]}
    assert {"echo", "add", "count"} <= set(tools)
    echo = tools["echo"]
    assert "nonce" in echo["inputSchema"]["required"]
    assert echo["inputSchema"]["properties"]["nonce"]["pattern"] == "^[A-Za-z0-9._:-]{8,128}$"
    assert echo["annotations"]["readOnlyHint"] is True
    assert echo["_meta"]["dev.openexec/approval"] == "auto"
    assert "receipt_hash" in echo["outputSchema"]["properties"]


def test_inspector_calls_echo_and_gets_a_verifiable_receipt(npx: str, state_dir: Path) -> None:
    env = server_env(state_dir)
    code, result = inspector(npx, env, *tool_call("echo", msg="hi", nonce="abcdefgh"))
    assert code == 0
    assert result["isError"] is False
    envelope = result["structuredContent"]
    assert envelope["status"] == "executed"
    assert envelope["result"] == {"echo": {"msg": "hi"}}
    body = verifier.verify_envelope(envelope, published_keys(env))
    assert body["nonce"] == "abcdefgh"
    assert body["action_hash"] == verifier.action_hash("echo", {"msg": "hi"}, "abcdefgh")


def test_inspector_replay_across_server_restarts_does_not_run_handler_again(
    npx: str, state_dir: Path, counter_file: Path
) -> None:
    env = server_env(state_dir)
    nonce = "insp-" + uuid.uuid4().hex[:12]
    first_code, first = inspector(npx, env, *tool_call("count", label="once", nonce=nonce))
    second_code, second = inspector(
        npx, env, *tool_call("count", label="once", nonce=nonce)
    )  # a new server process on the same state dir
    assert (first_code, first["structuredContent"]["status"]) == (0, "executed")
    assert (second_code, second["structuredContent"]["status"]) == (0, "replayed")
    assert executions(counter_file) == 1

    conflict_code, conflict = inspector(npx, env, *tool_call("count", label="other", nonce=nonce))
    assert conflict_code == 5  # isError
    assert conflict["structuredContent"]["error"]["code"] == "nonce_conflict"
    assert executions(counter_file) == 1
