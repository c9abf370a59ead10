"""Resources and prompts of upstreams, passed through to clients (SPEC §11, not gated, not receipted).

With ``expose_resources = true`` an upstream's ``resources/list``, ``resources/templates/list`` and
``resources/read`` answers reach the client unchanged (URIs are not renamed: a URI names its
resource wherever it is read). A read goes to the upstream that listed the URI last, else to each
exposing upstream in configuration order until one answers. With ``expose_prompts = true`` its
prompts are listed as ``<upstream>.<prompt>`` and ``prompts/get`` of that name is forwarded.

Reads are read-only by the protocol's own definition; a deployment that considers a resource
sensitive leaves ``expose_resources`` off (the default).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import mcp_types as types
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from openexec_mcp.errors import UpstreamUnavailableError
from openexec_mcp.upstream.connection import UpstreamConnection
from openexec_mcp.upstream.manager import UpstreamManager
from openexec_mcp.upstream.relay import set_client_level

__all__ = ["install_log_level", "install_passthrough"]

logger = logging.getLogger("openexec_mcp.upstream")

_PAGE_CAP = 100


def install_passthrough(server: MCPServer[Any], manager: UpstreamManager) -> None:
    """Serve the exposed upstreams' resources and prompts from ``server``'s own handlers.

    Replaces the ``resources/*`` handlers when at least one upstream has ``expose_resources``, and
    the ``prompts/*`` handlers when one has ``expose_prompts`` (openexec-mcp has none of its own).
    """
    low = server._lowlevel_server  # pyright: ignore[reportPrivateUsage]
    resource_upstreams = [c for c in manager.connections.values() if c.settings.expose_resources]
    prompt_upstreams = {c.name: c for c in manager.connections.values() if c.settings.expose_prompts}
    owners: dict[str, UpstreamConnection] = {}

    if resource_upstreams:

        async def list_resources(ctx: Any, params: types.PaginatedRequestParams) -> types.ListResourcesResult:
            resources: list[types.Resource] = []
            for connection in _ready(resource_upstreams):
                for resource in await _all_pages(connection, "resources"):
                    owners[str(resource.uri)] = connection
                    resources.append(resource)
            return types.ListResourcesResult(resources=resources)

        async def list_templates(ctx: Any, params: types.PaginatedRequestParams) -> types.ListResourceTemplatesResult:
            templates: list[types.ResourceTemplate] = []
            for connection in _ready(resource_upstreams):
                templates.extend(await _all_pages(connection, "templates"))
            return types.ListResourceTemplatesResult(resource_templates=templates)

        async def read_resource(ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
            uri = str(params.uri)
            owner = owners.get(uri)
            candidates = [owner] if owner is not None else _ready(resource_upstreams)
            last: MCPError | None = None
            for connection in candidates:
                try:
                    return await _client(connection).read_resource(uri)
                except MCPError as exc:
                    last = exc
            raise last or MCPError(types.INVALID_PARAMS, f"unknown resource {uri}")

        async def subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
            await _forward_subscription(_owner_of(str(params.uri)), "subscribe_resource", str(params.uri))
            return types.EmptyResult()

        async def unsubscribe(ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
            await _forward_subscription(_owner_of(str(params.uri)), "unsubscribe_resource", str(params.uri))
            return types.EmptyResult()

        def _owner_of(uri: str) -> UpstreamConnection:
            owner = owners.get(uri)
            ready = _ready(resource_upstreams)
            if owner is None and not ready:
                raise MCPError(types.INTERNAL_ERROR, "no upstream with resources is ready")
            return owner if owner is not None else ready[0]

        low.add_request_handler("resources/subscribe", types.SubscribeRequestParams, subscribe)
        low.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, unsubscribe)
        low.add_request_handler("resources/list", types.PaginatedRequestParams, list_resources)
        low.add_request_handler("resources/templates/list", types.PaginatedRequestParams, list_templates)
        low.add_request_handler("resources/read", types.ReadResourceRequestParams, read_resource)

    if prompt_upstreams:

        async def list_prompts(ctx: Any, params: types.PaginatedRequestParams) -> types.ListPromptsResult:
            prompts: list[types.Prompt] = []
            for connection in _ready(list(prompt_upstreams.values())):
                for prompt in await _all_pages(connection, "prompts"):
                    prompts.append(prompt.model_copy(update={"name": f"{connection.name}.{prompt.name}"}))
            return types.ListPromptsResult(prompts=prompts)

        async def get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
            upstream, _, name = params.name.partition(".")
            connection = prompt_upstreams.get(upstream)
            if connection is None or not name:
                raise MCPError(types.INVALID_PARAMS, f"unknown prompt {params.name}")
            return await _client(connection).get_prompt(name, params.arguments)

        async def complete(ctx: Any, params: types.CompleteRequestParams) -> types.CompleteResult:
            ref = params.ref
            argument = {"name": params.argument.name, "value": params.argument.value}
            context = params.context.arguments if params.context is not None else None
            if isinstance(ref, types.PromptReference):
                upstream, _, name = ref.name.partition(".")
                connection = prompt_upstreams.get(upstream)
                if connection is None or not name:
                    raise MCPError(types.INVALID_PARAMS, f"unknown prompt {ref.name}")
                return await _client(connection).complete(ref.model_copy(update={"name": name}), argument, context)
            for connection in _ready(resource_upstreams or list(prompt_upstreams.values())):
                return await _client(connection).complete(ref, argument, context)
            raise MCPError(types.INTERNAL_ERROR, "no upstream is ready")

        low.add_request_handler("completion/complete", types.CompleteRequestParams, complete)
        low.add_request_handler("prompts/list", types.PaginatedRequestParams, list_prompts)
        low.add_request_handler("prompts/get", types.GetPromptRequestParams, get_prompt)


async def _deprecated_call(connection: UpstreamConnection, method: str, *args: Any) -> Any:
    # resources/subscribe and logging/setLevel are deprecated in 2026-07-28 and still what 2025 servers speak.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        return await getattr(_client(connection), method)(*args)


async def _forward_subscription(connection: UpstreamConnection, method: str, uri: str) -> None:
    # A 2026-07-28 upstream has no resources/(un)subscribe (its subscriptions ride subscriptions/listen):
    # sending it one answers METHOD_NOT_FOUND, so the caller's request is accepted without it.
    # Update notifications are not relayed in either era.
    if connection.protocol_version in MODERN_PROTOCOL_VERSIONS:
        return
    await _deprecated_call(connection, method, uri)


def install_log_level(server: MCPServer[Any], manager: UpstreamManager) -> None:
    """Answer ``logging/setLevel`` and pass the level on to the ready upstreams that log (best effort)."""
    low = server._lowlevel_server  # pyright: ignore[reportPrivateUsage]

    async def set_level(ctx: Any, params: types.SetLevelRequestParams) -> types.EmptyResult:
        set_client_level(ctx, params.level)
        for connection in _ready(list(manager.connections.values())):
            capabilities = connection.capabilities
            if capabilities is not None and capabilities.logging is not None:
                try:
                    await _deprecated_call(connection, "set_logging_level", params.level)
                except MCPError:
                    logger.info("upstream %r refused logging/setLevel", connection.name)
        return types.EmptyResult()

    low.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)


def _ready(connections: list[UpstreamConnection]) -> list[UpstreamConnection]:
    return [connection for connection in connections if connection.state == "ready"]


def _client(connection: UpstreamConnection) -> Any:
    try:
        return connection.client
    except UpstreamUnavailableError as exc:
        raise MCPError(types.INTERNAL_ERROR, exc.message) from None


async def _all_pages(connection: UpstreamConnection, kind: str) -> list[Any]:
    client = _client(connection)
    capabilities = connection.capabilities
    if kind == "prompts" and (capabilities is None or capabilities.prompts is None):
        return []
    if kind != "prompts" and (capabilities is None or capabilities.resources is None):
        return []
    found: list[Any] = []
    cursor: str | None = None
    for _ in range(_PAGE_CAP):
        if kind == "resources":
            page: Any = await client.list_resources(cursor=cursor)
            found.extend(page.resources)
        elif kind == "templates":
            page = await client.list_resource_templates(cursor=cursor)
            found.extend(page.resource_templates)
        else:
            page = await client.list_prompts(cursor=cursor)
            found.extend(page.prompts)
        cursor = page.next_cursor
        if not cursor:
            break
    return found
