"""Upstream ``notifications/resources/updated`` forwarded to subscribed clients (SPEC §11, pass-through).

A real ``openexec-mcp serve`` over stdio, the fixture upstream behind it with
``expose_resources = true``, and a real ``mcp.Client`` in front. The upstream speaks 2026-07-28
(subscriptions are listen streams naming the URI) or only the handshake era
(``resources/subscribe``); the client speaks either era. The fixture writes each subscription it
is asked for to ``subscriptions.txt``, so a test sees what reached the upstream.
"""

from __future__ import annotations

import sys
import uuid
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from conftest import server_env
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPDeprecationWarning
from oe_testing.upstream_server import COUNTER_URI, subscriptions
from oe_testing.upstreams import server_args

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]


def config_for(root: Path, counter_dir: Path, *extra_args: str) -> Path:
    args = ", ".join(f'"{arg}"' for arg in [*server_args(counter_dir), *extra_args])
    config = root / "config.toml"
    config.write_text(
        f"""mode = "demo"

[[upstreams]]
name = "t"
command = "{sys.executable}"
args = [{args}]
env = {{ PYTHONPATH = "{Path(__file__).resolve().parents[1]}" }}
expose_resources = true
"""
    )
    return config


@asynccontextmanager
async def serve(root: Path, config: Path, *, mode: str, **client: Any) -> AsyncIterator[Client]:
    env = server_env(root / "state", OPENEXEC_CONFIG=str(config))
    params = StdioServerParameters(command=sys.executable, args=["-m", "openexec_mcp", "serve"], env=env)
    async with Client(params, mode=mode, **client) as connected:
        yield connected


async def touch(client: Client) -> None:
    result = await client.call_tool("t.touch", {"nonce": "n-" + uuid.uuid4().hex})
    assert isinstance(result.structured_content, dict) and result.structured_content["status"] == "executed", result


async def counter_text(client: Client) -> str:
    read = await client.read_resource(COUNTER_URI)
    assert isinstance(read.contents[0], types.TextResourceContents)
    return read.contents[0].text


async def wait_for_line(counter_dir: Path, line: str) -> None:
    with anyio.fail_after(30):
        while line not in subscriptions(counter_dir):
            await anyio.sleep(0.05)


@pytest.mark.parametrize("upstream_era", ["modern", "legacy-only"])
async def test_handshake_era_subscriber_gets_the_upstreams_update_and_unsubscribe_reaches_the_upstream(
    tmp_path: Path, upstream_era: str
) -> None:
    counter_dir = tmp_path / "upstream"
    extra = ["--legacy-only"] if upstream_era == "legacy-only" else []
    updates: list[str] = []
    heard = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updates.append(str(message.params.uri))
            heard.set()

    config = config_for(tmp_path, counter_dir, *extra)
    async with serve(tmp_path, config, mode="legacy", message_handler=on_message) as client:
        resources = client.server_capabilities.resources
        assert resources is not None and resources.subscribe is True
        assert COUNTER_URI in {str(resource.uri) for resource in (await client.list_resources()).resources}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await client.subscribe_resource(COUNTER_URI)  # pyright: ignore[reportDeprecated]
            await client.subscribe_resource(COUNTER_URI)  # pyright: ignore[reportDeprecated]
        held = "subscribe" if extra else "listen"
        await wait_for_line(counter_dir, f"{held} {COUNTER_URI}")
        await touch(client)
        with anyio.fail_after(30):
            await heard.wait()
        assert updates == [COUNTER_URI]
        assert await counter_text(client) == "counter 1"

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await client.unsubscribe_resource(COUNTER_URI)  # pyright: ignore[reportDeprecated]
        released = "unsubscribe" if extra else "unlisten"
        await wait_for_line(counter_dir, f"{released} {COUNTER_URI}")
        await touch(client)
        assert await counter_text(client) == "counter 2"
        await anyio.sleep(0.5)
        assert updates == [COUNTER_URI], "an update after the last unsubscribe reached the client"
    # One client subscribing twice is one subscriber: held once at the upstream, released once.
    lines = subscriptions(counter_dir)
    assert lines.count(f"{held} {COUNTER_URI}") == 1 and lines.count(f"{released} {COUNTER_URI}") == 1


@pytest.mark.parametrize("upstream_era", ["modern", "legacy-only"])
async def test_modern_listener_naming_the_uri_gets_the_update_and_its_end_releases_the_upstream(
    tmp_path: Path, upstream_era: str
) -> None:
    counter_dir = tmp_path / "upstream"
    extra = ["--legacy-only"] if upstream_era == "legacy-only" else []
    config = config_for(tmp_path, counter_dir, *extra)
    held, released = ("subscribe", "unsubscribe") if extra else ("listen", "unlisten")
    async with serve(tmp_path, config, mode="auto") as client:
        resources = client.server_capabilities.resources
        assert resources is not None and resources.subscribe is True
        async with client.listen(resource_subscriptions=[COUNTER_URI]) as subscription:
            await wait_for_line(counter_dir, f"{held} {COUNTER_URI}")
            await touch(client)
            with anyio.fail_after(30):
                async for event in subscription:
                    assert type(event).__name__ == "ResourceUpdated" and getattr(event, "uri", None) == COUNTER_URI
                    break
        await wait_for_line(counter_dir, f"{released} {COUNTER_URI}")
        assert await counter_text(client) == "counter 1"


async def test_subscribe_is_not_advertised_when_no_exposed_upstream_supports_it(tmp_path: Path) -> None:
    counter_dir = tmp_path / "upstream"
    config = config_for(tmp_path, counter_dir, "--legacy-only", "--no-subscribe")
    async with serve(tmp_path, config, mode="legacy") as client:
        resources = client.server_capabilities.resources
        assert resources is not None and not resources.subscribe
        assert COUNTER_URI in {str(resource.uri) for resource in (await client.list_resources()).resources}
    async with serve(tmp_path, config, mode="auto") as client:
        resources = client.server_capabilities.resources
        assert resources is not None and not resources.subscribe


@pytest.mark.parametrize("legacy_only", [False, True], ids=["modern-upstream", "legacy-only-upstream"])
async def test_upstream_is_held_once_for_two_subscribers_and_released_after_the_last(
    tmp_path: Path, legacy_only: bool
) -> None:
    from mcp.server.mcpserver import MCPServer
    from oe_testing.upstreams import stdio_settings

    from openexec_mcp.upstream.manager import UpstreamManager
    from openexec_mcp.upstream.passthrough import install_passthrough

    counter_dir = tmp_path / "upstream"
    counter_dir.mkdir()
    manager = UpstreamManager([stdio_settings(counter_dir, legacy_only=legacy_only, expose_resources=True)])
    front: MCPServer[Any] = MCPServer("front")
    install_passthrough(front, manager)
    heard: dict[str, list[str]] = {"first": [], "second": []}

    def listener(name: str) -> Any:
        async def on_message(message: Any) -> None:
            if isinstance(message, types.ResourceUpdatedNotification):
                heard[name].append(str(message.params.uri))

        return on_message

    held, released = ("subscribe", "unsubscribe") if legacy_only else ("listen", "unlisten")
    async with (
        manager.running(),
        Client(front, mode="legacy", message_handler=listener("first")) as first,
        Client(front, mode="legacy", message_handler=listener("second")) as second,
    ):
        connection = manager.connections["t"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await first.subscribe_resource(COUNTER_URI)  # pyright: ignore[reportDeprecated]
            await second.subscribe_resource(COUNTER_URI)  # pyright: ignore[reportDeprecated]
            await first.unsubscribe_resource(COUNTER_URI)  # pyright: ignore[reportDeprecated]
        await connection.call_tool("touch", {})
        with anyio.fail_after(30):
            while not heard["second"]:
                await anyio.sleep(0.02)
        assert heard == {"first": [], "second": [COUNTER_URI]}
        assert subscriptions(counter_dir) == [f"{held} {COUNTER_URI}"]  # one of two unsubscribed: still held
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await second.unsubscribe_resource(COUNTER_URI)  # pyright: ignore[reportDeprecated]
        await wait_for_line(counter_dir, f"{released} {COUNTER_URI}")
    assert subscriptions(counter_dir) == [f"{held} {COUNTER_URI}", f"{released} {COUNTER_URI}"]


@pytest.mark.parametrize("legacy_only", [False, True], ids=["modern-upstream", "legacy-only-upstream"])
async def test_a_subscription_is_held_again_after_the_upstream_restarts(tmp_path: Path, legacy_only: bool) -> None:
    from oe_testing.upstreams import stdio_settings

    from openexec_mcp.errors import OutcomeUnknownError
    from openexec_mcp.upstream.connection import UpstreamConnection

    counter_dir = tmp_path / "upstream"
    counter_dir.mkdir()
    updates: list[str] = []

    async def on_updated(connection: UpstreamConnection, uri: str) -> None:
        updates.append(uri)

    held = "subscribe" if legacy_only else "listen"
    connection = UpstreamConnection(
        stdio_settings(counter_dir, legacy_only=legacy_only),
        on_resource_updated=on_updated,
        backoff_initial_seconds=0.05,
    )
    async with anyio.create_task_group() as tg:
        await tg.start(connection.run)
        try:
            await connection.resources.subscribe(COUNTER_URI)
            with pytest.raises(OutcomeUnknownError):
                await connection.call_tool("crash", {"label": "restart"})
            with anyio.fail_after(60):
                while connection.connects < 2 or connection.state != "ready":
                    await anyio.sleep(0.05)
            assert subscriptions(counter_dir).count(f"{held} {COUNTER_URI}") == 2  # once per upstream process
            await connection.call_tool("touch", {})
            with anyio.fail_after(30):
                while not updates:
                    await anyio.sleep(0.02)
            assert updates == [COUNTER_URI]
        finally:
            await connection.stop()
