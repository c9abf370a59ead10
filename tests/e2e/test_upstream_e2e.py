"""Guarded upstreams end to end: a real client, a real ``openexec-mcp serve``, real upstreams (SPEC §11).

- The real ``@modelcontextprotocol/server-filesystem`` from npm behind ``serve`` over stdio, in
  ``clawshield`` mode with the README's rules: reads are ``auto`` by a rule; ``fs.write_file`` is
  ``approval_required``, then executes exactly once with a signed artifact, the file is on disk,
  and a retry of the same nonce is ``replayed`` without writing again.
- The Python fixture upstream behind ``serve``: ``tools/list_changed`` forwarded, a crash mid-call
  recorded ``indeterminate`` and never re-sent, ``nonce = "optional"`` server nonces, the
  upstream's content blocks unchanged, ``/health`` listing the upstreams.
"""

from __future__ import annotations

import shutil
import sys
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from conftest import server_env
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPDeprecationWarning
from oe_testing import processes, verifier
from oe_testing.approvals import GOV_PUBLIC_B64, ISSUER, mint
from oe_testing.http_server import running_http_server
from oe_testing.nonces import fresh_nonce
from oe_testing.npm import server_filesystem_entry
from oe_testing.receipts import envelope_of
from oe_testing.upstream_server import PNG_1X1, SERVER_NAME, SERVER_VERSION, executions
from oe_testing.upstreams import server_args

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300), pytest.mark.slow]

NONCE_META = "dev.openexec/nonce"
APPROVAL_META = "dev.openexec/approval"


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"' for item in items) + "]"


def filesystem_config(root: Path, data: Path) -> Path:
    node = shutil.which("node")
    assert node is not None
    entry = server_filesystem_entry()
    config = root / "config.toml"
    config.write_text(
        f"""mode = "clawshield"

[[approvals.keys]]
kid = "gov-test"
alg = "ed25519"
public_key = "{GOV_PUBLIC_B64}"
issuers = ["{ISSUER}"]

[[policy.rules]]
actions = ["fs.read_*", "fs.list_*", "fs.get_file_info", "fs.search_files", "fs.directory_tree"]
approval = "auto"

[[policy.rules]]
actions = ["fs.*"]
approval = "signed"

[[upstreams]]
name = "fs"
command = "{node}"
args = {toml_list([str(entry), str(data)])}
"""
    )
    return config


def fixture_config(root: Path, counter_dir: Path, *, nonce: str = "required") -> Path:
    config = root / "config.toml"
    config.write_text(
        f"""mode = "demo"

[[upstreams]]
name = "t"
command = "{sys.executable}"
args = {toml_list(server_args(counter_dir))}
env = {{ PYTHONPATH = "{Path(__file__).resolve().parents[1]}" }}
nonce = "{nonce}"
call_timeout_seconds = 20
"""
    )
    return config


@asynccontextmanager
async def stdio_serve(root: Path, config: Path, *, mode: str = "auto", **client: Any) -> AsyncIterator[Client]:
    env = server_env(root / "state", OPENEXEC_CONFIG=str(config))
    params = StdioServerParameters(command=sys.executable, args=["-m", "openexec_mcp", "serve"], env=env)
    async with Client(params, mode=mode, **client) as connected:
        yield connected


def published_keys(root: Path, config: Path) -> dict[str, Any]:
    return processes.published_keys(server_env(root / "state", OPENEXEC_CONFIG=str(config)))


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_filesystem_reads_are_auto_and_writes_need_a_signed_approval_once(tmp_path: Path, mode: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "notes.txt").write_text("the quarterly numbers")
    config = filesystem_config(tmp_path, data)
    target = data / "report.txt"
    async with stdio_serve(tmp_path, config, mode=mode) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert {"fs.read_text_file", "fs.write_file", "fs.list_directory"} <= set(tools)
        assert "nonce" in tools["fs.write_file"].input_schema["required"]
        assert (tools["fs.read_text_file"].meta or {}).get(APPROVAL_META) in ("auto", None)

        # Reads: auto by the first rule; the upstream's text block is passed through unchanged.
        read = await client.call_tool("fs.read_text_file", {"path": str(data / "notes.txt"), "nonce": fresh_nonce()})
        envelope = envelope_of(read)
        assert envelope["status"] == "executed", envelope
        assert isinstance(read.content[0], types.TextContent) and read.content[0].text == "the quarterly numbers"
        assert envelope["result"]["content"][0]["text"] == "the quarterly numbers"

        # Writes: signed. Without an artifact: approval_required, nothing written.
        nonce = fresh_nonce()
        arguments = {"path": str(target), "content": "approved text", "nonce": nonce}
        first = envelope_of(await client.call_tool("fs.write_file", arguments))
        assert (first["status"], first["error"]["code"]) == ("denied", "approval_required")
        assert not target.exists()
        action_hash = first["approval_request"]["action_hash"]
        payload = {"path": str(target), "content": "approved text"}
        assert action_hash == verifier.action_hash("fs.write_file", payload, nonce)

        # With the artifact: executed once; the file is on disk.
        artifact = mint(action_hash)
        second = envelope_of(await client.call_tool("fs.write_file", arguments, meta={APPROVAL_META: artifact}))
        assert second["status"] == "executed", second
        assert target.read_text() == "approved text"

        # A retry of the same nonce is replayed: the upstream is not called again.
        target.write_text("changed on disk since")
        third = envelope_of(await client.call_tool("fs.write_file", arguments, meta={APPROVAL_META: artifact}))
        assert third["status"] == "replayed" and third["result"] == second["result"]
        assert target.read_text() == "changed on disk since"

    keys = published_keys(tmp_path, config)
    body = verifier.verify_envelope(second, keys)
    assert body["upstream"]["name"] == "fs"
    assert body["upstream"]["server"]["name"] == "secure-filesystem-server"
    assert body["nonce_source"] == "client"
    assert body["approval"]["method"] == "signed"
    assert body["result_hash"] == verifier.result_hash(second["result"])


async def test_upstream_tools_keep_their_blocks_and_list_changes_are_forwarded(tmp_path: Path) -> None:
    counter_dir = tmp_path / "upstream"
    config = fixture_config(tmp_path, counter_dir)
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with stdio_serve(tmp_path, config, mode="legacy", message_handler=on_message) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"t.count", "t.image", "t.grow"} <= names and not any("bad name" in name for name in names)

        image = await client.call_tool("t.image", {"nonce": fresh_nonce()})
        assert isinstance(image.content[0], types.ImageContent) and image.content[0].data == PNG_1X1
        assert isinstance(image.content[-1], types.TextContent) and image.content[-1].text.startswith("executed")

        failed = envelope_of(await client.call_tool("t.fail", {"reason": "r", "nonce": fresh_nonce()}))
        assert (failed["status"], failed["error"]["code"]) == ("failed", "upstream_error")
        assert failed["result"]["isError"] is True

        grown = envelope_of(await client.call_tool("t.grow", {"name": "fresh", "nonce": fresh_nonce()}))
        assert grown["status"] == "executed"
        with anyio.fail_after(30):
            await changed.wait()
        assert "t.fresh" in {tool.name for tool in (await client.list_tools()).tools}


async def test_crash_mid_call_is_indeterminate_and_never_resent(tmp_path: Path) -> None:
    counter_dir = tmp_path / "upstream"
    config = fixture_config(tmp_path, counter_dir)
    nonce = fresh_nonce()
    async with stdio_serve(tmp_path, config) as client:
        crashed = envelope_of(await client.call_tool("t.crash", {"label": "once", "nonce": nonce}))
        assert (crashed["status"], crashed["error"]["code"]) == ("indeterminate", "outcome_unknown")
        retried = envelope_of(await client.call_tool("t.crash", {"label": "once", "nonce": nonce}))
        assert (retried["status"], retried["error"]["code"]) == ("denied", "outcome_unknown")
        # The upstream comes back (backoff from 1 s) and serves new calls.
        with anyio.fail_after(60):
            while True:
                answer = envelope_of(await client.call_tool("t.count", {"label": "later", "nonce": fresh_nonce()}))
                if answer["status"] == "executed":
                    break
                assert answer["error"]["code"] == "upstream_unavailable"
                await anyio.sleep(0.2)
    assert executions(counter_dir).count("crash once") == 1


async def test_optional_nonce_upstream_gets_server_nonces_and_meta_nonces(tmp_path: Path) -> None:
    counter_dir = tmp_path / "upstream"
    config = fixture_config(tmp_path, counter_dir, nonce="optional")
    async with stdio_serve(tmp_path, config) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert "nonce" not in tools["t.count"].input_schema.get("required", [])
        without = envelope_of(await client.call_tool("t.count", {"label": "a"}))
        assert without["status"] == "executed"
        # A tool with its own nonce: the argument is passed through, the gate's nonce rides _meta.
        nonce = fresh_nonce()
        stamped = envelope_of(
            await client.call_tool("t.stamp", {"nonce": "tool-own", "text": "x"}, meta={NONCE_META: nonce})
        )
        assert stamped["status"] == "executed"
        again = envelope_of(
            await client.call_tool("t.stamp", {"nonce": "tool-own", "text": "x"}, meta={NONCE_META: nonce})
        )
        assert again["status"] == "replayed"
    keys = published_keys(tmp_path, config)
    assert verifier.verify_envelope(without, keys)["nonce_source"] == "server"
    body = verifier.verify_envelope(stamped, keys)
    assert body["nonce_source"] == "client" and body["nonce"] == nonce
    assert body["upstream"] == {"name": "t", "server": {"name": SERVER_NAME, "version": SERVER_VERSION}}
    assert executions(counter_dir) == ["count a", "stamp tool-own"]


async def test_health_lists_the_upstreams_over_http(tmp_path: Path) -> None:
    counter_dir = tmp_path / "upstream"
    config = fixture_config(tmp_path, counter_dir)
    env = server_env(tmp_path / "state", OPENEXEC_CONFIG=str(config))
    with running_http_server(env, tmp_path) as http:
        health = httpx.get(http.base_url + "/health", timeout=30).json()
        [upstream] = health["upstreams"]
        assert upstream["name"] == "t" and upstream["state"] == "ready" and upstream["tools"] >= 10
        async with Client(http.mcp_url) as client:
            answer = envelope_of(await client.call_tool("t.count", {"label": "h", "nonce": fresh_nonce()}))
            assert answer["status"] == "executed"
    assert executions(counter_dir) == ["count h"]


def test_sigterm_stops_the_upstream_processes_after_the_drain(tmp_path: Path) -> None:
    import os
    import signal

    from oe_testing.processes import http_server, wait_for

    counter_dir = tmp_path / "upstream"
    config = fixture_config(tmp_path, counter_dir)
    env = server_env(tmp_path / "state", OPENEXEC_CONFIG=str(config))
    with http_server(env, tmp_path) as server:
        upstream_pid = int((counter_dir / "pid").read_text())
        os.kill(upstream_pid, 0)  # running
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0

    def gone() -> bool:
        try:
            os.kill(upstream_pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{upstream_pid}/stat") as stat:  # a zombie awaiting its reaper counts as gone
            return stat.read().split()[2] == "Z"

    wait_for(gone, "the upstream process to end")


async def test_progress_and_logs_reach_the_caller_through_the_proxy(tmp_path: Path) -> None:
    counter_dir = tmp_path / "upstream"
    config = fixture_config(tmp_path, counter_dir)
    logs: list[Any] = []
    steps: list[float] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        steps.append(progress)

    async with stdio_serve(tmp_path, config, mode="legacy", logging_callback=on_log) as client:
        silent = envelope_of(await client.call_tool("t.log", {"message": "unheard", "nonce": fresh_nonce()}))
        assert silent["status"] == "executed"
        with warnings.catch_warnings():  # deprecated in 2026-07-28; how a 2025 client sets its level
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await client.set_logging_level("info")  # pyright: ignore[reportDeprecated]
        heard = envelope_of(await client.call_tool("t.log", {"message": "heard", "nonce": fresh_nonce()}))
        assert heard["status"] == "executed"
        progressed = await client.call_tool(
            "t.progress", {"steps": 3, "nonce": fresh_nonce()}, progress_callback=on_progress
        )
        assert envelope_of(progressed)["status"] == "executed"
    assert logs == ["heard"]
    assert steps == [1, 2, 3]
