"""A real upstream MCP server for the guarded-proxy tests (SPEC §11), written with the MCP SDK.

Run it as a stdio subprocess::

    python -m oe_testing.upstream_server --counter-dir DIR

or over streamable HTTP (and legacy SSE on the same port) on loopback::

    python -m oe_testing.upstream_server --counter-dir DIR --http PORT

Every tool that does something appends one line ``<tool> <label>`` to ``DIR/executions.txt``
before it answers, so a test can count how many times the upstream really ran a call, even across
a crash. Tools:

- ``count(label)``: counts, answers ``{"count": n}`` (text + structured content).
- ``fail(reason)``: counts, answers ``isError`` with the reason.
- ``sleep(seconds, label)``: counts, then sleeps (seconds, float) and answers ``"slept"``; a
  cancelled sleep writes ``sleep-cancelled <label>``.
- ``crash(label)``: counts, then kills the whole process mid-call (``os._exit(3)``).
- ``progress(steps)``: sends ``steps`` progress notifications (``i`` of ``steps``), answers ``"done"``.
- ``image()``: answers one 1×1 PNG image block and one text block.
- ``log(message)``: sends one ``info`` log message, answers ``"logged"``.
- ``ask(question)``: elicits ``{"answer": str}`` from the client; answers the action and the answer.
- ``confirm(label)``: elicits ``{"answer": str}`` (message ``"Confirm <label>?"``), then counts
  ``confirm <label> <action>:<answer>``, sends one progress notification and answers
  ``<action>:<answer>``.
- ``muse(label)``: asks the client's model (``sampling/createMessage``, the prompt ``"Muse on
  <label>"``), then counts ``muse <label> <text>`` and answers the sampled text.
- ``stamp(nonce, text)``: a tool that declares its own ``nonce`` argument; echoes both.
- ``grow(name)``: adds a tool ``name`` (which answers ``"grown"``) and sends ``tools/list_changed``.
- ``bad name!``: a tool whose name does not match the SPEC §1 regex (the proxy must skip it).
- ``strict(n)``: takes an integer ``n`` in [0, 10], no other properties; answers ``n``.

Resources ``test://static`` and the template ``test://item/{item_id}``; a prompt ``greet(who)``.

Resource subscriptions (:func:`add_counter_resource`): ``test://counter`` reads ``counter <n>``;
``touch()`` adds one to ``n`` and sends ``notifications/resources/updated`` for it (handshake era:
when subscribed with ``resources/subscribe``; 2026-07-28: to the listen streams naming it). Each
``resources/subscribe``, ``resources/unsubscribe`` and listen stream naming resources is written
to ``DIR/subscriptions.txt`` (``subscribe <uri>``, ``unsubscribe <uri>``, ``listen <uri>``,
``unlisten <uri>``). ``--no-subscribe`` leaves ``resources/subscribe`` unserved.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import anyio
import mcp_types as types
from mcp.server.mcpserver import AcceptedElicitation, Context, Elicit, ElicitationResult, MCPServer, Resolve, Sample
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel

SERVER_NAME = "oe-test-upstream"
SERVER_VERSION = "1.2.3"
PNG_1X1 = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
        "0000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()


class Answer(BaseModel):
    answer: str


def ask_user(question: str) -> Elicit[Answer]:
    """The resolver of ``ask``: elicit an :class:`Answer`."""
    return Elicit(question, Answer)


def confirm_label(label: str) -> Elicit[Answer]:
    """The resolver of ``confirm``: elicit an :class:`Answer` about ``label``."""
    return Elicit(f"Confirm {label}?", Answer)


def muse_on(label: str) -> Sample:
    """The resolver of ``muse``: one sampling request about ``label``."""
    message = types.SamplingMessage(role="user", content=types.TextContent(type="text", text=f"Muse on {label}"))
    return Sample([message], max_tokens=50)


def executions(counter_dir: Path) -> list[str]:
    """The lines written by counted tool runs, in order (``"<tool> <label>"``)."""
    path = counter_dir / "executions.txt"
    return path.read_text().splitlines() if path.exists() else []


class LegacyOnly:
    """Middleware that answers ``server/discover`` with METHOD_NOT_FOUND: a handshake-era-only server."""

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        if ctx.method == "server/discover":
            raise MCPError(types.METHOD_NOT_FOUND, "Method not found")
        return await call_next(ctx)


def build_server(counter_dir: Path, *, legacy_only: bool = False, subscribe: bool = True) -> MCPServer:
    """Build the upstream server; counted executions go to ``counter_dir/executions.txt``."""
    mcp = MCPServer(SERVER_NAME, version=SERVER_VERSION, middleware=[LegacyOnly()] if legacy_only else None)
    counter = counter_dir / "executions.txt"

    def record(tool: str, label: str) -> int:
        with counter.open("a") as handle:
            handle.write(f"{tool} {label}\n")
            handle.flush()
            os.fsync(handle.fileno())
        return sum(1 for line in counter.read_text().splitlines() if line.startswith(f"{tool} "))

    @mcp.tool(title="Count one execution", annotations=types.ToolAnnotations(idempotent_hint=False))
    def count(label: str) -> dict[str, int]:
        """Count one execution and answer the running total."""
        return {"count": record("count", label)}

    @mcp.tool()
    def fail(reason: str) -> str:
        """Count, then fail with isError."""
        record("fail", reason)
        raise ToolError(f"failed on purpose: {reason}")

    @mcp.tool()
    async def sleep(seconds: float, label: str = "") -> str:
        """Count, then sleep."""
        record("sleep", label)
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            record("sleep-cancelled", label)  # the client's notifications/cancelled arrived
            raise
        return "slept"

    @mcp.tool()
    def crash(label: str = "") -> str:
        """Count, then kill this process mid-call."""
        record("crash", label)
        sys.stderr.flush()
        os._exit(3)

    @mcp.tool()
    async def progress(steps: int, ctx: Context) -> str:
        """Send ``steps`` progress notifications."""
        for step in range(1, steps + 1):
            await ctx.report_progress(step, steps, f"step {step}")
        return "done"

    @mcp.tool(annotations=types.ToolAnnotations(read_only_hint=True))
    def image() -> list[types.ContentBlock]:
        """Answer an image block and a text block."""
        return [
            types.ImageContent(type="image", data=PNG_1X1, mime_type="image/png"),
            types.TextContent(type="text", text="a pixel"),
        ]

    @mcp.tool()
    async def log(message: str, ctx: Context) -> str:
        """Send one info log message."""
        await ctx.info(message)
        return "logged"

    @mcp.tool()
    def ask(question: str, outcome: Annotated[ElicitationResult[Answer], Resolve(ask_user)]) -> str:
        """Elicit an answer from the client (a server request in 2025, input_required in 2026)."""
        answer = outcome.data.answer if isinstance(outcome, AcceptedElicitation) else ""
        return f"{outcome.action}:{answer}"

    @mcp.tool()
    async def confirm(
        label: str, outcome: Annotated[ElicitationResult[Answer], Resolve(confirm_label)], ctx: Context
    ) -> str:
        """Elicit a confirmation, count it with the user's answer, then report one progress step."""
        answer = outcome.data.answer if isinstance(outcome, AcceptedElicitation) else ""
        record("confirm", f"{label} {outcome.action}:{answer}")
        await ctx.report_progress(1, 1, "confirmed")
        return f"{outcome.action}:{answer}"

    @mcp.tool()
    def muse(label: str, sampled: Annotated[types.CreateMessageResult, Resolve(muse_on)]) -> str:
        """Sample the client's model, then count it with the sampled text."""
        text = sampled.content.text if isinstance(sampled.content, types.TextContent) else ""
        record("muse", f"{label} {text}")
        return text

    @mcp.tool()
    def stamp(nonce: str, text: str) -> str:
        """A tool with its own nonce argument."""
        record("stamp", nonce)
        return f"{nonce}:{text}"

    @mcp.tool()
    async def grow(name: str, ctx: Context) -> str:
        """Add a tool at run time and announce the change."""

        def grown() -> str:
            return "grown"

        mcp.add_tool(grown, name=name, description="Added at run time.")
        await announce_tools_changed(ctx)
        return "grew"

    @mcp.resource("test://static", name="static", mime_type="text/plain")
    def static_resource() -> str:
        return "static resource text"

    @mcp.resource("test://item/{item_id}", name="item")
    def item_resource(item_id: str) -> str:
        return f"item {item_id}"

    @mcp.prompt(name="greet", description="Greet someone.")
    def greet(who: str) -> str:
        return f"Say hello to {who}."

    def bad_name() -> str:
        return "never listed by the proxy"

    mcp.add_tool(bad_name, name="bad name!", description="A name outside the SPEC §1 regex.")
    add_counter_resource(mcp, counter_dir, subscribe=subscribe)

    def strict_tool(n: int) -> int:
        return n

    listed = Tool.from_function(strict_tool, name="strict", description="An integer in [0, 10].")
    mcp._tool_manager._tools["strict"] = listed.model_copy(  # pyright: ignore[reportPrivateUsage]
        update={
            "parameters": {
                "type": "object",
                "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 10}},
                "required": ["n"],
                "additionalProperties": False,
            }
        }
    )
    return mcp


COUNTER_URI = "test://counter"


def subscriptions(counter_dir: Path) -> list[str]:
    """The subscription lines the fixture wrote, in order (``"subscribe <uri>"``, ``"listen <uri>"`` ...)."""
    path = counter_dir / "subscriptions.txt"
    return path.read_text().splitlines() if path.exists() else []


def add_counter_resource(mcp: MCPServer, counter_dir: Path, *, subscribe: bool) -> None:
    """Add ``test://counter``, the ``touch`` tool that changes it, and ``resources/subscribe``."""
    log = counter_dir / "subscriptions.txt"
    value = [0]
    subscribed: set[str] = set()

    def note(line: str) -> None:
        with log.open("a") as handle:
            handle.write(line + "\n")

    @mcp.resource(COUNTER_URI, name="counter", mime_type="text/plain")
    def counter_resource() -> str:
        return f"counter {value[0]}"

    @mcp.tool()
    async def touch(ctx: Context) -> str:
        """Change ``test://counter`` and tell its subscribers."""
        value[0] += 1
        if ctx.protocol_version is not None and ctx.protocol_version >= "2026":
            await ctx.notify_resource_updated(COUNTER_URI)
        elif COUNTER_URI in subscribed:
            await ctx.session.send_resource_updated(COUNTER_URI)
        return f"counter {value[0]}"

    low = mcp._lowlevel_server  # pyright: ignore[reportPrivateUsage]
    if subscribe:

        async def on_subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
            subscribed.add(str(params.uri))
            note(f"subscribe {params.uri}")
            return types.EmptyResult()

        async def on_unsubscribe(ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
            subscribed.discard(str(params.uri))
            note(f"unsubscribe {params.uri}")
            return types.EmptyResult()

        low.add_request_handler("resources/subscribe", types.SubscribeRequestParams, on_subscribe)
        low.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, on_unsubscribe)
    listen = low._request_handlers["subscriptions/listen"].handler  # pyright: ignore[reportPrivateUsage]

    async def on_listen(ctx: Any, params: types.SubscriptionsListenRequestParams) -> Any:
        uris = list(params.notifications.resource_subscriptions or ())
        for uri in uris:
            note(f"listen {uri}")
        try:
            return await listen(ctx, params)
        finally:
            for uri in uris:
                note(f"unlisten {uri}")

    low.add_request_handler("subscriptions/listen", types.SubscriptionsListenRequestParams, on_listen)


async def announce_tools_changed(ctx: Context) -> None:
    """Send ``tools/list_changed`` in the era the client speaks (a notification, or a listen event)."""
    if ctx.protocol_version is not None and ctx.protocol_version >= "2026":
        await ctx.notify_tools_changed()
    else:
        await ctx.session.send_tool_list_changed()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--counter-dir", type=Path, required=True)
    parser.add_argument("--http", type=int, default=None, help="serve streamable HTTP on 127.0.0.1:PORT")
    parser.add_argument("--legacy-only", action="store_true", help="speak only the handshake era (2025)")
    parser.add_argument("--no-subscribe", action="store_true", help="leave resources/subscribe unserved")
    args = parser.parse_args(argv)
    args.counter_dir.mkdir(parents=True, exist_ok=True)
    (args.counter_dir / "pid").write_text(str(os.getpid()))  # tests check that the server ends it
    server = build_server(args.counter_dir, legacy_only=args.legacy_only, subscribe=not args.no_subscribe)
    if args.http is None:
        anyio.run(_serve_stdio_legacy if args.legacy_only else _serve_stdio, server)
        return
    anyio.run(_serve_http, server, args.http)


async def _serve_stdio(server: MCPServer) -> None:
    await server.run_stdio_async()


async def _serve_stdio_legacy(server: MCPServer) -> None:
    """stdio in the handshake era only: ``server/discover`` is an unknown method, like a 2025 server."""
    from mcp.server.runner import serve_loop
    from mcp.server.stdio import stdio_server

    low = server._lowlevel_server  # pyright: ignore[reportPrivateUsage]
    async with stdio_server() as (read_stream, write_stream), low.lifespan(low) as state:
        await serve_loop(
            low, read_stream, write_stream, lifespan_state=state, init_options=low.create_initialization_options()
        )


async def _serve_http(server: MCPServer, port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette

    app = server.streamable_http_app()
    sse = server.sse_app()
    combined = Starlette(routes=[*app.routes, *sse.routes], lifespan=app.router.lifespan_context)
    config = uvicorn.Config(combined, host="127.0.0.1", port=port, log_level="warning")
    await uvicorn.Server(config).serve()


def wait_for_port(port: int, timeout_seconds: float = 30.0) -> None:
    """Block until 127.0.0.1:``port`` accepts TCP connections."""
    import socket

    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"upstream on port {port} did not start")


def tool_names(listing: Any) -> list[str]:
    return sorted(tool.name for tool in listing.tools)


if __name__ == "__main__":
    main()
