"""The fixture MCP server for the official conformance suite's server scenarios, written with the MCP SDK.

The suite (``@modelcontextprotocol/conformance``, ``conformance server --url URL --scenario NAME``)
calls fixed tool, resource and prompt names and checks their answers. Its own reference server is
not in the npm package, so this module implements, from the scenario descriptions in the suite, a
server that answers them (our own code, not the reference's). Run it over streamable HTTP on
loopback::

    python -m oe_testing.conformance_server --http PORT

or over stdio (``python -m oe_testing.conformance_server``).

Tools (names as the scenarios call them):

- ``test_simple_text``, ``test_image_content`` (PNG), ``test_audio_content`` (WAV),
  ``test_embedded_resource``, ``test_multiple_content_types`` (text, image, resource): fixed content.
- ``test_error_handling``: answers ``isError`` with a message.
- ``test_tool_with_logging``: three ``info`` log messages 50 ms apart.
- ``test_tool_with_progress``: progress 0, 50, 100 of 100, 50 ms apart.
- ``test_sampling(prompt)``: one ``sampling/createMessage`` (``maxTokens`` 100); answers the reply.
- ``test_elicitation(message)``: elicits ``username`` and ``email``; answers the outcome.
- ``test_elicitation_sep1034_defaults``: elicits five fields with defaults (SEP-1034).
- ``test_elicitation_sep1330_enums``: elicits the five enum forms of SEP-1330.
- ``json_schema_2020_12_tool``: an input schema with ``$schema``, ``$defs``, ``$ref`` and
  ``additionalProperties: false`` (SEP-1613).
- ``test_reconnection``: closes its SSE stream mid-call, then answers (SEP-1699 polling; the
  answer is replayed from the event store when the client reconnects with ``Last-Event-ID``).

Resources ``test://static-text``, ``test://static-binary``, ``test://watched-resource`` (which
``resources/subscribe`` and ``unsubscribe`` accept) and the template ``test://template/{id}/data``.
Prompts ``test_simple_prompt``, ``test_prompt_with_arguments(arg1, arg2)`` (with
``completion/complete`` for its arguments), ``test_prompt_with_embedded_resource(resourceUri)``,
``test_prompt_with_image``. ``logging/setLevel`` is accepted. On 127.0.0.1 the SDK's DNS-rebinding
protection answers a foreign ``Host`` with 421.

Elicitation and sampling go through the SDK's ``Resolve`` markers, so they work in both protocol
eras: a server-to-client request mid-call (2025-11-25) or an ``input_required`` round (2026-07-28,
how openexec-mcp's upstream client speaks to this server).
"""

from __future__ import annotations

import argparse
import base64
import io
import itertools
import json
import wave
from typing import Annotated, Any, Literal

import anyio
import mcp_types as types
from mcp.server.mcpserver import Context, Elicit, ElicitationResult, MCPServer, Resolve, Sample
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts.base import Message, UserMessage
from mcp.server.mcpserver.tools import Tool
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from pydantic import BaseModel, Field, JsonValue

from oe_testing.upstream_server import PNG_1X1

SERVER_NAME = "oe-conformance-fixture"
SERVER_VERSION = "0.1.0"
STEP_SECONDS = 0.05
RETRY_MILLISECONDS = 200
"""The ``retry`` an SSE priming event suggests to a client whose stream was closed."""
JSON_SCHEMA_2020_12 = "https://json-schema.org/draft/2020-12/schema"
PROMPT_ARGUMENT_VALUES = ("paris", "park", "party", "test", "testing")


def wav_silence() -> str:
    """A base64 WAV file: 8 kHz, mono, 16-bit, 80 samples of silence (10 ms)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x00" * 80)
    return base64.b64encode(buffer.getvalue()).decode()


WAV_SILENCE = wav_silence()


class MemoryEventStore(EventStore):
    """Every SSE event of every stream kept in memory, so a closed stream can be resumed (SEP-1699)."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._events: list[tuple[str, str, types.JSONRPCMessage | None]] = []  # (event id, stream id, message)

    async def store_event(self, stream_id: str, message: types.JSONRPCMessage | None) -> str:
        event_id = str(next(self._ids))
        self._events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        stream = next((stream for event, stream, _ in self._events if event == last_event_id), None)
        if stream is None:
            return None
        after = int(last_event_id)
        for event, event_stream, message in list(self._events):
            if event_stream == stream and int(event) > after and message is not None:
                await send_callback(EventMessage(message, event))
        return stream


class UserInfo(BaseModel):
    username: str = Field(description="User's response")
    email: str = Field(description="User's email address")


class PrimitiveDefaults(BaseModel):
    """SEP-1034: a default for every primitive type."""

    name: str = "John Doe"
    age: int = 30
    score: float = 95.5
    status: Literal["active", "inactive", "pending"] = "active"
    verified: bool = True


def _titled(*pairs: tuple[str, str]) -> list[JsonValue]:
    return [{"const": value, "title": title} for value, title in pairs]


class EnumForms(BaseModel):
    """SEP-1330: untitled and titled single-select, the legacy ``enumNames``, and both multi-selects."""

    untitledSingle: Literal["option1", "option2", "option3"]  # the scenario's field names (camelCase)
    titledSingle: str = Field(
        json_schema_extra={
            "oneOf": _titled(("value1", "First Option"), ("value2", "Second Option"), ("value3", "Third Option"))
        }
    )
    legacyEnum: Literal["opt1", "opt2", "opt3"] = Field(
        json_schema_extra={"enumNames": ["Option One", "Option Two", "Option Three"]}
    )
    untitledMulti: list[Literal["option1", "option2", "option3"]]
    titledMulti: list[str] = Field(
        json_schema_extra={
            "items": {
                "anyOf": _titled(("value1", "First Choice"), ("value2", "Second Choice"), ("value3", "Third Choice"))
            }
        }
    )


def ask_user_info(message: str) -> Elicit[UserInfo]:
    return Elicit(message, UserInfo)


def ask_defaults() -> Elicit[PrimitiveDefaults]:
    return Elicit("Please confirm or change the defaults.", PrimitiveDefaults)


def ask_enums() -> Elicit[EnumForms]:
    return Elicit("Please choose the options.", EnumForms)


def sample_prompt(prompt: str) -> Sample:
    message = types.SamplingMessage(role="user", content=types.TextContent(type="text", text=prompt))
    return Sample([message], max_tokens=100)


def outcome_text(prefix: str, outcome: ElicitationResult[Any]) -> str:
    content = outcome.data.model_dump(mode="json") if outcome.action == "accept" else None
    return f"{prefix}: action={outcome.action}, content={json.dumps(content)}"


def build_server() -> MCPServer:
    """Build the fixture server (tools, resources, prompts, completion, logging, subscriptions)."""
    mcp = MCPServer(SERVER_NAME, version=SERVER_VERSION)
    _add_content_tools(mcp)
    _add_interactive_tools(mcp)
    _add_resources(mcp)
    _add_prompts(mcp)
    _add_protocol_handlers(mcp)
    return mcp


def _add_content_tools(mcp: MCPServer) -> None:
    @mcp.tool()
    def test_simple_text() -> str:
        """Answer one text block."""
        return "This is a simple text response for testing."

    @mcp.tool()
    def test_image_content() -> list[types.ContentBlock]:
        """Answer one PNG image block."""
        return [types.ImageContent(type="image", data=PNG_1X1, mime_type="image/png")]

    @mcp.tool()
    def test_audio_content() -> list[types.ContentBlock]:
        """Answer one WAV audio block."""
        return [types.AudioContent(type="audio", data=WAV_SILENCE, mime_type="audio/wav")]

    @mcp.tool()
    def test_embedded_resource() -> list[types.ContentBlock]:
        """Answer one embedded text resource."""
        resource = types.TextResourceContents(
            uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."
        )
        return [types.EmbeddedResource(type="resource", resource=resource)]

    @mcp.tool()
    def test_multiple_content_types() -> list[types.ContentBlock]:
        """Answer a text, an image and an embedded resource block."""
        resource = types.TextResourceContents(
            uri="test://mixed-content-resource",
            mime_type="application/json",
            text=json.dumps({"test": "data", "value": 123}),
        )
        return [
            types.TextContent(type="text", text="Multiple content types test:"),
            types.ImageContent(type="image", data=PNG_1X1, mime_type="image/png"),
            types.EmbeddedResource(type="resource", resource=resource),
        ]

    @mcp.tool()
    def test_error_handling() -> str:
        """Always fail with isError."""
        raise ToolError("This tool intentionally returns an error for testing")

    def json_schema_tool(**arguments: Any) -> str:
        return f"received {json.dumps(arguments, sort_keys=True)}"

    schema = {
        "$schema": JSON_SCHEMA_2020_12,
        "type": "object",
        "$defs": {
            "address": {"type": "object", "properties": {"street": {"type": "string"}, "city": {"type": "string"}}}
        },
        "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
        "additionalProperties": False,
    }
    listed = Tool.from_function(
        json_schema_tool, name="json_schema_2020_12_tool", description="Tool with JSON Schema 2020-12 features"
    )
    mcp._tool_manager._tools[listed.name] = listed.model_copy(update={"parameters": schema})  # pyright: ignore[reportPrivateUsage]


def _add_interactive_tools(mcp: MCPServer) -> None:
    @mcp.tool()
    async def test_tool_with_logging(ctx: Context) -> str:
        """Send three info log messages, 50 ms apart."""
        await ctx.info("Tool execution started")
        await anyio.sleep(STEP_SECONDS)
        await ctx.info("Tool processing data")
        await anyio.sleep(STEP_SECONDS)
        await ctx.info("Tool execution completed")
        return "Logging tool completed"

    @mcp.tool()
    async def test_tool_with_progress(ctx: Context) -> str:
        """Report progress 0, 50 and 100 of 100, 50 ms apart."""
        for step, progress in enumerate((0, 50, 100)):
            if step:
                await anyio.sleep(STEP_SECONDS)
            await ctx.report_progress(progress, 100, f"{progress}%")
        return "Progress tool completed"

    @mcp.tool()
    def test_sampling(prompt: str, reply: Annotated[types.CreateMessageResult, Resolve(sample_prompt)]) -> str:
        """Ask the client's LLM (sampling/createMessage) and answer its reply."""
        text = reply.content.text if isinstance(reply.content, types.TextContent) else str(reply.content)
        return f"LLM response: {text}"

    @mcp.tool()
    def test_elicitation(message: str, outcome: Annotated[ElicitationResult[UserInfo], Resolve(ask_user_info)]) -> str:
        """Elicit a username and an email address from the user."""
        return outcome_text("User response", outcome)

    @mcp.tool()
    def test_elicitation_sep1034_defaults(
        outcome: Annotated[ElicitationResult[PrimitiveDefaults], Resolve(ask_defaults)],
    ) -> str:
        """Elicit five primitive fields that carry defaults (SEP-1034)."""
        return outcome_text("Elicitation completed", outcome)

    @mcp.tool()
    def test_elicitation_sep1330_enums(outcome: Annotated[ElicitationResult[EnumForms], Resolve(ask_enums)]) -> str:
        """Elicit the five enum forms of SEP-1330."""
        return outcome_text("Elicitation completed", outcome)

    @mcp.tool()
    async def test_reconnection(ctx: Context) -> str:
        """Close this call's SSE stream, then answer (the client resumes with Last-Event-ID)."""
        await ctx.close_sse_stream()
        await anyio.sleep(STEP_SECONDS)
        return "Reconnection test completed"


def _add_resources(mcp: MCPServer) -> None:
    @mcp.resource(
        "test://static-text", name="static-text", description="A static text resource.", mime_type="text/plain"
    )
    def static_text() -> str:
        return "This is the content of the static text resource."

    @mcp.resource(
        "test://static-binary", name="static-binary", description="A static PNG resource.", mime_type="image/png"
    )
    def static_binary() -> bytes:
        return base64.b64decode(PNG_1X1)

    @mcp.resource(
        "test://watched-resource",
        name="watched-resource",
        description="A resource to subscribe to.",
        mime_type="text/plain",
    )
    def watched() -> str:
        return "Watched resource content."

    @mcp.resource(
        "test://template/{id}/data",
        name="template-data",
        description="Data for one id.",
        mime_type="application/json",
    )
    def template_data(id: str) -> str:
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


def _add_prompts(mcp: MCPServer) -> None:
    @mcp.prompt(name="test_simple_prompt", description="A prompt without arguments.")
    def simple_prompt() -> str:
        return "This is a simple prompt for testing."

    @mcp.prompt(name="test_prompt_with_arguments", description="A prompt with two arguments.")
    def prompt_with_arguments(arg1: str, arg2: str) -> str:
        return f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"

    @mcp.prompt(name="test_prompt_with_embedded_resource", description="A prompt that embeds a resource.")
    def prompt_with_embedded_resource(resourceUri: str) -> list[Message]:  # the scenario's argument name
        resource = types.TextResourceContents(
            uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."
        )
        return [
            UserMessage(content=types.EmbeddedResource(type="resource", resource=resource)),
            UserMessage(content=types.TextContent(type="text", text="Please process the embedded resource above.")),
        ]

    @mcp.prompt(name="test_prompt_with_image", description="A prompt with an image.")
    def prompt_with_image() -> list[Message]:
        return [
            UserMessage(content=types.ImageContent(type="image", data=PNG_1X1, mime_type="image/png")),
            UserMessage(content=types.TextContent(type="text", text="Please analyze the image above.")),
        ]

    @mcp.completion()
    async def complete(ref: Any, argument: types.CompletionArgument, context: Any) -> types.Completion | None:
        if isinstance(ref, types.PromptReference) and ref.name == "test_prompt_with_arguments":
            values = [value for value in PROMPT_ARGUMENT_VALUES if value.startswith(argument.value)]
            return types.Completion(values=values, total=len(values), has_more=False)
        return None


def _add_protocol_handlers(mcp: MCPServer) -> None:
    """``logging/setLevel``, ``resources/subscribe`` and ``resources/unsubscribe`` (the SDK has no decorators)."""
    low = mcp._lowlevel_server  # pyright: ignore[reportPrivateUsage]
    subscribed: set[str] = set()

    async def set_level(ctx: Any, params: types.SetLevelRequestParams) -> types.EmptyResult:
        return types.EmptyResult()

    async def subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        subscribed.add(str(params.uri))
        return types.EmptyResult()

    async def unsubscribe(ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        subscribed.discard(str(params.uri))
        return types.EmptyResult()

    low.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)
    low.add_request_handler("resources/subscribe", types.SubscribeRequestParams, subscribe)
    low.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, unsubscribe)


async def _serve_http(server: MCPServer, port: int) -> None:
    import uvicorn

    app = server.streamable_http_app(event_store=MemoryEventStore(), retry_interval=RETRY_MILLISECONDS)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    await uvicorn.Server(config).serve()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--http", type=int, default=None, help="serve streamable HTTP on 127.0.0.1:PORT")
    args = parser.parse_args(argv)
    server = build_server()
    if args.http is None:
        anyio.run(server.run_stdio_async)
        return
    anyio.run(_serve_http, server, args.http)


if __name__ == "__main__":
    main()
