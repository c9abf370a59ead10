"""Upstream connections and their guarded tools, against the real fixture upstream (SPEC §11).

Every test talks to a real MCP server process written with the SDK: over stdio (launched by the
connection itself) and over streamable HTTP / SSE on loopback, in both protocol eras (the fixture
speaks 2026-07-28 and the handshake era by default; ``--legacy-only`` makes it refuse
``server/discover``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from oe_testing.upstream_server import PNG_1X1, SERVER_NAME, SERVER_VERSION, executions
from oe_testing.upstreams import http_upstream, stdio_settings

from openexec_mcp.errors import InvalidRequestError, OutcomeUnknownError, UpstreamError, UpstreamUnavailableError
from openexec_mcp.upstream.actions import UpstreamAction, actions_for
from openexec_mcp.upstream.config import UpstreamSettings
from openexec_mcp.upstream.connection import UpstreamConnection
from openexec_mcp.upstream.hooks import CallHooks, use_hooks
from openexec_mcp.upstream.manager import UpstreamManager

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

ERAS = [pytest.param(False, id="auto-era"), pytest.param(True, id="legacy-only")]


@pytest.fixture
def counter_dir(tmp_path: Path) -> Path:
    path = tmp_path / "upstream"
    path.mkdir()
    return path


@asynccontextmanager
async def connected(settings: UpstreamSettings, **kwargs: Any) -> AsyncIterator[UpstreamConnection]:
    connection = UpstreamConnection(settings, **kwargs)
    async with anyio.create_task_group() as tg:
        await tg.start(connection.run)
        try:
            yield connection
        finally:
            await connection.stop()


def by_name(connection: UpstreamConnection) -> dict[str, UpstreamAction]:
    return {action.name: action for action in actions_for(connection)}


@pytest.mark.parametrize("legacy_only", ERAS)
async def test_stdio_upstream_tools_are_advertised_with_prefix_and_bad_names_skipped(
    counter_dir: Path, legacy_only: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async with connected(stdio_settings(counter_dir, legacy_only=legacy_only)) as connection:
        assert connection.state == "ready"
        assert connection.server_info == {"name": SERVER_NAME, "version": SERVER_VERSION}
        assert (connection.protocol_version == "2026-07-28") is (not legacy_only)
        actions = by_name(connection)
    assert "t.count" in actions and "t.strict" in actions
    assert not any("bad name" in name for name in actions)
    assert sum("bad name!" in record.getMessage() for record in caplog.records) <= 1
    count = actions["t.count"]
    assert count.title == "Count one execution"
    assert count.upstream == {"name": "t", "server": {"name": SERVER_NAME, "version": SERVER_VERSION}}
    assert count.input_schema()["properties"]["label"]["type"] == "string"
    assert "nonce" not in count.input_schema()["properties"]
    assert actions["t.image"].read_only is True and actions["t.image"].destructive is False
    assert count.read_only is False and count.destructive is True and count.open_world is True


@pytest.mark.parametrize("legacy_only", ERAS)
async def test_forwarded_call_runs_once_and_returns_the_upstream_result_as_json(
    counter_dir: Path, legacy_only: bool
) -> None:
    async with connected(stdio_settings(counter_dir, legacy_only=legacy_only)) as connection:
        result = await connection.call_tool("count", {"label": "a"})
    assert result["isError"] is False
    assert result["structuredContent"] == {"count": 1}
    assert result["content"][0]["type"] == "text"
    assert set(result) == {"content", "structuredContent", "isError"}
    assert executions(counter_dir) == ["count a"]


@pytest.mark.parametrize("legacy_only", ERAS)
async def test_http_upstream_forwards_in_both_eras(counter_dir: Path, legacy_only: bool) -> None:
    with http_upstream(counter_dir, legacy_only=legacy_only) as upstream:
        async with connected(upstream.settings()) as connection:
            assert connection.state == "ready"
            assert (connection.protocol_version == "2026-07-28") is (not legacy_only)
            result = await connection.call_tool("count", {"label": "h"})
    assert result["structuredContent"] == {"count": 1}
    assert executions(counter_dir) == ["count h"]


async def test_sse_upstream_forwards(counter_dir: Path) -> None:
    with http_upstream(counter_dir) as upstream:
        async with connected(upstream.settings(transport="sse")) as connection:
            assert connection.state == "ready"
            result = await connection.call_tool("count", {"label": "s"})
    assert result["structuredContent"] == {"count": 1}


async def test_image_blocks_pass_through_unchanged(counter_dir: Path) -> None:
    async with connected(stdio_settings(counter_dir)) as connection:
        result = await connection.call_tool("image", {})
    assert result["content"] == [
        {"type": "image", "data": PNG_1X1, "mimeType": "image/png"},
        {"type": "text", "text": "a pixel"},
    ]


async def test_upstream_is_error_raises_upstream_error_with_the_result(counter_dir: Path) -> None:
    async with connected(stdio_settings(counter_dir)) as connection:
        with pytest.raises(UpstreamError) as raised:
            await connection.call_tool("fail", {"reason": "nope"})
    assert raised.value.code == "upstream_error"
    assert isinstance(raised.value.result, dict)
    assert raised.value.result["isError"] is True
    assert "nope" in raised.value.result["content"][0]["text"]
    assert executions(counter_dir) == ["fail nope"]


async def test_arguments_are_validated_strictly_against_the_upstream_schema(counter_dir: Path) -> None:
    async with connected(stdio_settings(counter_dir)) as connection:
        strict = by_name(connection)["t.strict"]
    assert strict.parse_payload({"n": 3}) == {"n": 3}
    for bad in ({"n": "3"}, {"n": 11}, {"n": 3, "extra": 1}, {}, {"n": 3.5}, {"n": True}):
        with pytest.raises(InvalidRequestError) as raised:
            strict.parse_payload(bad)
        assert raised.value.code == "invalid_request"
    assert executions(counter_dir) == []


async def test_tool_with_its_own_nonce_declares_it(counter_dir: Path) -> None:
    async with connected(stdio_settings(counter_dir)) as connection:
        actions = by_name(connection)
        stamp = actions["t.stamp"]
        assert stamp.declares_nonce is True and actions["t.count"].declares_nonce is False
        assert "nonce" in stamp.input_schema()["properties"]
        assert await stamp.handler(stamp.parse_payload({"nonce": "tool-own-1", "text": "x"})) is not None
    assert executions(counter_dir) == ["stamp tool-own-1"]


async def test_optional_nonce_upstream_marks_its_actions(counter_dir: Path) -> None:
    async with connected(stdio_settings(counter_dir, nonce="optional")) as connection:
        assert all(not action.nonce_required for action in actions_for(connection))


async def test_no_answer_within_the_call_timeout_is_outcome_unknown(counter_dir: Path) -> None:
    async with connected(stdio_settings(counter_dir, call_timeout_seconds=0.5)) as connection:
        with pytest.raises(OutcomeUnknownError) as raised:
            await connection.call_tool("sleep", {"seconds": 60, "label": "slow"})
        assert raised.value.code == "outcome_unknown"
        # The courtesy notifications/cancelled reached the upstream, and the connection still works.
        with anyio.fail_after(30):
            while "sleep-cancelled slow" not in executions(counter_dir):
                await anyio.sleep(0.05)
        assert (await connection.call_tool("count", {"label": "after"}))["structuredContent"] == {"count": 1}


async def test_upstream_crash_mid_call_is_outcome_unknown_and_the_upstream_restarts(counter_dir: Path) -> None:
    settings = stdio_settings(counter_dir)
    async with connected(settings, backoff_initial_seconds=0.05) as connection:
        with pytest.raises(OutcomeUnknownError):
            await connection.call_tool("crash", {"label": "boom"})
        with anyio.fail_after(60):
            while not (connection.connects == 2 and connection.state == "ready"):
                await connection.wait_state("ready") if connection.state != "ready" else await anyio.sleep(0.05)
        result = await connection.call_tool("count", {"label": "again"})
    assert result["structuredContent"] == {"count": 1}
    assert executions(counter_dir) == ["crash boom", "count again"]  # the crashed call was never re-sent


async def test_calls_while_the_upstream_is_down_are_unavailable_and_nothing_is_sent(tmp_path: Path) -> None:
    settings = UpstreamSettings(name="gone", command="/bin/false")
    async with connected(settings, backoff_initial_seconds=30) as connection:
        assert connection.state == "down"
        with pytest.raises(UpstreamUnavailableError) as raised:
            await connection.call_tool("count", {"label": "x"})
    assert raised.value.code == "upstream_unavailable"


async def test_http_upstream_that_went_away_answers_unavailable(counter_dir: Path) -> None:
    with http_upstream(counter_dir) as upstream:
        settings = upstream.settings()
        connection = UpstreamConnection(settings, backoff_initial_seconds=30)
        async with anyio.create_task_group() as tg:
            await tg.start(connection.run)
            upstream.process.kill()
            upstream.process.wait()
            with pytest.raises((UpstreamUnavailableError, OutcomeUnknownError)) as raised:
                await connection.call_tool("count", {"label": "x"})
            # Refused at TCP connect: nothing left, so the nonce may be retried.
            assert isinstance(raised.value, UpstreamUnavailableError)
            await connection.stop()
    assert executions(counter_dir) == []


async def test_caller_cancellation_is_forwarded_and_outcome_unknown(counter_dir: Path) -> None:
    hooks = CallHooks()
    async with connected(stdio_settings(counter_dir)) as connection:

        async def cancel_once_running() -> None:
            while "sleep c1" not in executions(counter_dir):
                await anyio.sleep(0.05)
            hooks.cancelled.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_once_running)
            with use_hooks(hooks), pytest.raises(OutcomeUnknownError):
                await connection.call_tool("sleep", {"seconds": 60, "label": "c1"})
        with anyio.fail_after(30):
            while "sleep-cancelled c1" not in executions(counter_dir):
                await anyio.sleep(0.05)


async def test_progress_log_and_elicitation_reach_the_caller_hooks(counter_dir: Path) -> None:
    seen: list[tuple[float, float | None, str | None]] = []
    logs: list[Any] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    async def on_elicit(params: types.ElicitRequestParams) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"answer": "forty-two"})

    hooks = CallHooks(progress=on_progress, log=on_log, elicit=on_elicit)
    for legacy_only in (False, True):
        seen.clear()
        logs.clear()
        async with connected(stdio_settings(counter_dir, legacy_only=legacy_only)) as connection:
            with use_hooks(hooks):
                await connection.call_tool("progress", {"steps": 3})
                await connection.call_tool("log", {"message": "hello upstream"})
                asked = await connection.call_tool("ask", {"question": "?"})
            declined = await connection.call_tool("ask", {"question": "?"})  # no hooks: declined
        assert [step[0] for step in seen] == [1, 2, 3]
        assert logs == ["hello upstream"]
        assert asked["content"][0]["text"] == "accept:forty-two"
        assert declined["content"][0]["text"] == "decline:"


@pytest.mark.parametrize("legacy_only", ERAS)
async def test_tools_list_changed_relists_and_publishes(counter_dir: Path, legacy_only: bool) -> None:
    published: list[tuple[str, list[str]]] = []
    changed = anyio.Event()

    def publish(source: str, actions: list[UpstreamAction]) -> None:
        published.append((source, sorted(action.name for action in actions)))
        if "t.fresh" in published[-1][1]:
            changed.set()

    manager = UpstreamManager([stdio_settings(counter_dir, legacy_only=legacy_only)], publish=publish)
    async with manager.running():
        assert published and published[0][0] == "upstream:t" and "t.fresh" not in published[0][1]
        assert manager.health() == [{"name": "t", "state": "ready", "tools": len(published[0][1])}]
        await manager.connections["t"].call_tool("grow", {"name": "fresh"})
        with anyio.fail_after(30):
            await changed.wait()
        assert manager.health()[0]["tools"] == len(published[0][1]) + 1


async def test_manager_refuses_duplicate_upstream_names(counter_dir: Path) -> None:
    from openexec_mcp.errors import ConfigError

    with pytest.raises(ConfigError):
        UpstreamManager([stdio_settings(counter_dir), stdio_settings(counter_dir)])


def test_upstream_settings_need_exactly_one_kind() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        UpstreamSettings(name="x")
    with pytest.raises(ValidationError):
        UpstreamSettings(name="x", command="a", url="http://127.0.0.1:1/mcp")
    with pytest.raises(ValidationError):
        UpstreamSettings(name="Bad", command="a")
    assert UpstreamSettings(name="x", url="http://127.0.0.1:1/sse", transport="sse").kind == "sse"


def test_env_header_values_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from openexec_mcp.errors import ConfigError

    settings = UpstreamSettings(name="x", url="http://127.0.0.1:1/mcp", headers={"Authorization": "env:OE_UP_TOKEN"})
    with pytest.raises(ConfigError) as raised:
        settings.resolved_headers()
    assert "OE_UP_TOKEN" in raised.value.message
    monkeypatch.setenv("OE_UP_TOKEN", "Bearer s3cret")
    assert settings.resolved_headers() == {"Authorization": "Bearer s3cret"}


async def test_the_real_filesystem_server_from_npm_is_guarded(tmp_path: Path) -> None:
    import shutil

    from oe_testing.npm import server_filesystem_entry

    entry = server_filesystem_entry()
    data = tmp_path / "data"
    data.mkdir()
    (data / "hello.txt").write_text("hello from disk")
    node = shutil.which("node")
    assert node is not None
    settings = UpstreamSettings(name="fs", command=node, args=[str(entry), str(data)])
    async with connected(settings) as connection:
        assert connection.server_info["name"] == "secure-filesystem-server"
        actions = by_name(connection)
        assert {"fs.read_text_file", "fs.write_file", "fs.list_directory"} <= set(actions)
        read = actions["fs.read_text_file"]
        assert read.read_only is True
        payload = read.parse_payload({"path": str(data / "hello.txt")})
        result = await read.handler(payload)
        assert "hello from disk" in result["content"][0]["text"]
        with pytest.raises(UpstreamError):
            await read.handler(read.parse_payload({"path": "/etc/passwd"}))  # outside the allowed directory
        with pytest.raises(InvalidRequestError):
            read.parse_payload({"path": 7})


async def test_resources_and_prompts_pass_through_unchanged_and_prefixed(counter_dir: Path) -> None:
    from mcp import Client
    from mcp.server.mcpserver import MCPServer

    from openexec_mcp.upstream.passthrough import install_passthrough

    manager = UpstreamManager([stdio_settings(counter_dir, expose_resources=True, expose_prompts=True)])
    front: MCPServer[Any] = MCPServer("front")
    install_passthrough(front, manager)
    async with manager.running(), Client(front) as client:
        resources = (await client.list_resources()).resources
        assert [str(resource.uri) for resource in resources] == ["test://static", "test://counter"]
        read = await client.read_resource("test://static")
        assert isinstance(read.contents[0], types.TextResourceContents)
        assert read.contents[0].text == "static resource text"
        templated = await client.read_resource("test://item/42")
        assert isinstance(templated.contents[0], types.TextResourceContents) and templated.contents[0].text == "item 42"
        templates = (await client.list_resource_templates()).resource_templates
        assert [template.uri_template for template in templates] == ["test://item/{item_id}"]
        prompts = (await client.list_prompts()).prompts
        assert [prompt.name for prompt in prompts] == ["t.greet"]
        got = await client.get_prompt("t.greet", {"who": "Ada"})
        assert isinstance(got.messages[0].content, types.TextContent) and "Ada" in got.messages[0].content.text
    assert executions(counter_dir) == []


async def test_list_changes_are_announced_to_clients_of_both_eras() -> None:
    from mcp import Client
    from mcp.server.mcpserver import MCPServer

    from openexec_mcp.upstream.announce import ListChangedAnnouncer

    front: MCPServer[Any] = MCPServer("front")

    @front.tool()
    def ping() -> str:
        return "pong"

    announcer = ListChangedAnnouncer(front)
    heard = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            heard.set()

    async with Client(front, mode="legacy", message_handler=on_message) as legacy:
        assert legacy.server_capabilities.tools is not None and legacy.server_capabilities.tools.list_changed
        await legacy.list_tools()
        await announcer.announce("tools")
        with anyio.fail_after(10):
            await heard.wait()

    async with Client(front) as modern, modern.listen(tools_list_changed=True) as subscription:
        await announcer.announce("tools")
        with anyio.fail_after(10):
            async for event in subscription:
                assert type(event).__name__ == "ToolsListChanged"
                break
