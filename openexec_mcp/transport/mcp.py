"""MCP wiring: actions as tools, every ``tools/call`` through the gate (SPEC §1, §6).

The only place where gate answers become MCP results. Each exposed action is advertised as a tool
whose ``inputSchema`` is the input model's schema plus the reserved ``nonce``, and whose
``outputSchema`` is the result envelope. A single :class:`GateExtension` intercepts every
``tools/call`` (both protocol eras) and never calls the SDK's own tool runner; the tools'
functions refuse to run if they are ever reached, so a bypass fails closed. Calls to upstream
tools go through :mod:`openexec_mcp.transport.upstream_calls` (an upstream's questions to a
2026-07-28 caller become ``input_required`` rounds, :mod:`openexec_mcp.transport.continuations`);
the approval confirmation by elicitation is :mod:`openexec_mcp.transport.elicitor`.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Extension, MCPServer, RequestStateSecurity
from mcp.server.mcpserver.tools.base import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INVALID_PARAMS,
    CallToolRequestParams,
    CallToolResult,
    GetPromptResult,
    InputRequiredResult,
    TextContent,
    ToolAnnotations,
)

from openexec_mcp import __version__
from openexec_mcp.core.action import parse_run_id
from openexec_mcp.core.canonical import json_object
from openexec_mcp.errors import InvalidRequestError, MalformedInputError
from openexec_mcp.gate.envelope import refusal_envelope
from openexec_mcp.gate.pipeline import Answer, CallContext, Gate, NeedsInput
from openexec_mcp.registry import Action
from openexec_mcp.transport.continuations import ParkedCalls
from openexec_mcp.transport.elicitor import ELICITATION_KEY, McpElicitor, approval_input_required
from openexec_mcp.transport.ingress import INGRESS_META, IngressCheck
from openexec_mcp.transport.schemas import envelope_schema, input_schema
from openexec_mcp.transport.upstream_calls import UpstreamCalls, is_continuation
from openexec_mcp.upstream.actions import UpstreamAction
from openexec_mcp.upstream.announce import ListChangedAnnouncer, ToolSync
from openexec_mcp.upstream.manager import UpstreamManager
from openexec_mcp.upstream.passthrough import install_log_level, install_passthrough
from openexec_mcp.upstream.relay import upstream_call_result

__all__ = [
    "APPROVAL_META",
    "ELICITATION_KEY",
    "NONCE_META",
    "RUN_ID_META",
    "GateExtension",
    "McpElicitor",
    "answer_to_result",
    "build_mcp_server",
    "plain_text",
    "public_envelope",
    "summary_line",
]

logger = logging.getLogger("openexec_mcp.transport.mcp")

APPROVAL_META = "dev.openexec/approval"
"""Request ``_meta`` key carrying an approval artifact; tool ``_meta`` key naming the policy."""

NONCE_META = "dev.openexec/nonce"
"""Request ``_meta`` key carrying the gate's nonce, accepted on every tool (SPEC §11)."""

RUN_ID_META = "dev.openexec/run_id"
"""Request ``_meta`` key naming the caller's run (SPEC §7)."""

_CONNECTION_RUN_ID = "dev.openexec/run_id"

INSTRUCTIONS = (
    "Every tool here is guarded by openexec-mcp. Each call needs a fresh, unique 'nonce' argument "
    "(8-128 characters of A-Z a-z 0-9 . _ : -). Re-sending the same nonce with the same arguments returns "
    "the first result without running the action again; use a new nonce for a new action. Every answer "
    "carries a signed receipt."
)

TenantResolver = Callable[[Any], str]
"""Maps the SDK request context to the caller's tenant_id."""


class GateExtension(Extension):
    """Intercepts every ``tools/call`` and answers it through the gate.

    Args:
        gate: The gate.
        tenant_for: Returns the tenant of the request (from auth, else the configured tenant).
        ingress: The raw-bytes check whose sealed ``_meta`` marker means "refuse this call as
            ``invalid_request``" (SPEC §2, §10; see :mod:`openexec_mcp.transport.ingress`).
        parked: Where calls to upstream tools of 2026-07-28 callers wait for the caller's answers
            to the upstream's questions (``None``: no upstreams running; see
            :mod:`openexec_mcp.transport.continuations`).
    """

    identifier = "dev.openexec/gate"

    def __init__(
        self, gate: Gate, tenant_for: TenantResolver, ingress: IngressCheck, parked: ParkedCalls | None = None
    ) -> None:
        self._gate = gate
        self._tenant_for = tenant_for
        self._ingress = ingress
        self._upstream_calls = UpstreamCalls(gate, parked)
        self._process_run_id = "conn:" + secrets.token_hex(8)

    async def intercept_tool_call(
        self, params: CallToolRequestParams, ctx: Any, call_next: Any
    ) -> CallToolResult | InputRequiredResult:
        """Answer the call through the gate; never raise, never call the SDK's tool runner."""
        meta = _meta_dict(params.meta)
        try:
            if INGRESS_META in meta:
                # The raw frame broke SPEC §2 (or a client used our reserved key): nothing ran.
                sealed = self._ingress.is_sealed(meta[INGRESS_META])
                raise MalformedInputError(sealed or f"the _meta key {INGRESS_META!r} is reserved")
            call_ctx = CallContext(
                tenant_id=self._tenant_for(ctx),
                run_id=_run_id(meta, ctx, self._process_run_id),
                approval_artifact=meta.get(APPROVAL_META),
                elicitor=McpElicitor(params, ctx),
                meta_nonce=meta.get(NONCE_META),
            )
        except InvalidRequestError as exc:  # the caller's _meta, refused before the gate: nothing recorded
            return answer_to_result(Answer(refusal_envelope(params.name, exc), exc))
        # Gate.call never raises: an unexpected error comes back as internal_error with a receipt.
        action = self._gate.action(params.name)
        upstream = isinstance(action, UpstreamAction) or is_continuation(params)
        if upstream:
            gated = await self._upstream_calls.call(action, params, ctx, call_ctx)
        else:
            gated = await self._gate.call(params.name, params.arguments or {}, call_ctx)
        if isinstance(gated, InputRequiredResult):
            return gated  # an upstream's question, for a 2026-07-28 caller (SPEC §11)
        if isinstance(gated, NeedsInput):
            return approval_input_required(gated.input_required)
        if upstream:
            return upstream_call_result(public_envelope(gated.envelope), summary_line)
        return answer_to_result(gated)


def build_mcp_server(
    gate: Gate,
    tenant_for: TenantResolver,
    *,
    token_verifier: TokenVerifier | None = None,
    auth: AuthSettings | None = None,
    request_state_keys: Sequence[str] = (),
    request_state_ttl_seconds: int = 600,
    ingress: IngressCheck | None = None,
    upstreams: UpstreamManager | None = None,
) -> MCPServer[Any]:
    """Build the MCP server that advertises the exposed actions as guarded tools.

    Args:
        gate: The gate every call goes through.
        tenant_for: The caller's tenant for a request context.
        token_verifier: Bearer-token verifier for the HTTP transports (with ``auth``).
        auth: The SDK auth settings (required scopes) for the HTTP transports.
        request_state_keys: Shared keys sealing ``requestState`` (replicas); empty: per process.
        request_state_ttl_seconds: Lifetime of a sealed ``requestState``, in seconds; also the
            longest an upstream's ``input_required`` round waits for its retry.
        ingress: The raw-bytes check of the transport in front (a new one when ``None``).
        upstreams: The guarded upstreams: their resources and prompts pass through when exposed,
            and their list changes reach the clients.
    """
    ingress = ingress if ingress is not None else IngressCheck(gate.policy.limits["max_payload_bytes"])
    parked = ParkedCalls(upstreams.start_soon, request_state_ttl_seconds) if upstreams is not None else None
    security = (
        RequestStateSecurity(keys=list(request_state_keys), ttl=request_state_ttl_seconds, audience=gate.server_id)
        if request_state_keys
        else None
    )
    server: MCPServer[Any] = _GuardedServer(
        "openexec-mcp",
        version=__version__,
        instructions=INSTRUCTIONS,
        tools=[],
        extensions=[GateExtension(gate, tenant_for, ingress, parked)],
        log_level="WARNING",
        token_verifier=token_verifier,
        auth=auth,
        request_state_security=security,
    )
    # The tool list follows the catalog: upstream tools come and go at run time (SPEC §11).
    announcer = ListChangedAnnouncer(server)

    def advertise(action: Action) -> Tool:
        return _tool_for(action, gate.policy.advertised(action))

    tools = ToolSync(server, advertise, announcer)
    tools.sync(gate.exposed())
    gate.actions.on_change_async(lambda: tools.sync_and_announce(gate.exposed()))
    if upstreams is not None:
        install_passthrough(server, upstreams)
        install_log_level(server, upstreams)
        upstreams.on_list_changed(announcer.announce)
    return server


class _GuardedServer(MCPServer[Any]):
    """``MCPServer`` whose ``prompts/get`` of an unknown prompt is JSON-RPC ``-32602`` (MCP spec, prompts)."""

    async def get_prompt(
        self, name: str, arguments: dict[str, Any] | None = None, context: Any = None
    ) -> GetPromptResult | InputRequiredResult:
        """Answer ``-32602`` for a name no prompt has, else render it as the SDK does."""
        if name not in {prompt.name for prompt in await self.list_prompts()}:
            raise MCPError(code=INVALID_PARAMS, message=f"unknown prompt {name[:64]!r}")
        return await super().get_prompt(name, arguments, context)


_PUBLIC_MESSAGES = {
    "store_unavailable": "the store is unavailable; retry later",
    "outcome_not_recorded": "the action ran but its outcome could not be recorded",
}
"""Fixed client messages for codes whose internal message names the store (SPEC §10)."""


def public_envelope(envelope: dict[str, Any]) -> dict[str, Any]:
    """Return the envelope as a client may see it: no store address or driver text (SPEC §10).

    The full message of a store error is logged by whoever raised it; the client gets the code
    and a fixed sentence.
    """
    error = json_object(envelope.get("error"))
    if error is None or error.get("code") not in _PUBLIC_MESSAGES:
        return envelope
    message = _PUBLIC_MESSAGES[str(error["code"])]
    if error.get("message") != message:
        logger.error("%s: %s", error["code"], error.get("message"))
    return {**envelope, "error": {**error, "message": message}}


def answer_to_result(answer: Answer) -> CallToolResult:
    """Return the MCP result: the envelope as ``structuredContent`` plus a one-line summary (SPEC §6)."""
    envelope = public_envelope(answer.envelope)
    return CallToolResult(
        content=[TextContent(type="text", text=summary_line(envelope))],
        structured_content=envelope,
        is_error=envelope["status"] not in ("executed", "replayed"),
    )


def summary_line(envelope: Mapping[str, Any]) -> str:
    """Return a one-line plain-text summary of an envelope, for a model that ignores structured content.

    Example: ``denied add: invalid_request: ... (nothing was recorded)`` or
    ``executed echo, exec_id 3f..., result {"echo":...}``. No Python reprs (``None``).
    """
    action = envelope.get("action") or "(unknown tool)"
    head = f"{envelope['status']} {action}"
    if envelope.get("exec_id"):
        head += f", exec_id {envelope['exec_id']}"
    error = envelope.get("error")
    if error:
        head += f": {error['code']}: {error['message']}"
    if envelope.get("receipt_hash") is None:
        head += " (nothing was recorded)"
    if envelope.get("result") is not None:
        text = json.dumps(envelope["result"], separators=(",", ":"), ensure_ascii=False)
        head += ", result " + (text if len(text) <= 4000 else text[:4000] + "...")
    return head.replace("\n", " ")


def plain_text(text: str) -> str:
    """Return a docstring as plain text for a model: reStructuredText inline literals lose their backticks."""
    return re.sub(r"``([^`]*)``", r"\1", text).replace(":class:", "").replace(":func:", "")


def _tool_for(action: Action, approval: str) -> Tool:
    def refuse(**_: Any) -> Any:
        raise RuntimeError("openexec-mcp: tool reached without the gate; refusing to run")

    return Tool(
        fn=refuse,
        name=action.name,
        title=action.title,
        description=plain_text(action.description),
        parameters=input_schema(action),
        fn_metadata=FuncMetadata(arg_model=ArgModelBase, output_schema=envelope_schema(action)),
        is_async=False,
        context_kwarg=None,
        annotations=ToolAnnotations(
            title=action.title,
            read_only_hint=action.read_only,
            destructive_hint=action.destructive,
            idempotent_hint=action.idempotent,
            open_world_hint=action.open_world,
        )
        if not isinstance(action, UpstreamAction)
        else action.annotations,  # an upstream's annotations pass through unchanged (SPEC §11)
        meta={APPROVAL_META: approval},
    )


def _meta_dict(meta: Any) -> dict[str, Any]:
    if meta is None:
        return {}
    if isinstance(meta, Mapping):
        return dict(meta)  # pyright: ignore[reportUnknownArgumentType]
    dumped: dict[str, Any] = meta.model_dump(by_alias=True)
    return dumped


def _run_id(meta: Mapping[str, Any], ctx: Any, process_run_id: str) -> str:
    """``_meta`` run_id, else the MCP session id, else one per connection (SPEC §7).

    A stdio server has exactly one connection, its process, so stdio calls share
    ``process_run_id`` in both protocol eras (2026-07-28 has no connection object that outlives
    a request). Over HTTP without a session, the SDK connection decides.
    """
    given = meta.get(RUN_ID_META)
    if given is not None:
        return parse_run_id(given)
    request = getattr(ctx, "request", None)
    if request is None:
        return process_run_id
    headers = getattr(request, "headers", None)
    if headers is not None:
        session = headers.get("mcp-session-id") or getattr(request, "query_params", {}).get("session_id")
        if session:
            return f"mcp-session:{session}"[:128]
    connection = getattr(getattr(ctx, "session", None), "_connection", None)
    state = json_object(getattr(connection, "state", None))
    if state is not None:
        run_id = state.setdefault(_CONNECTION_RUN_ID, "conn:" + secrets.token_hex(8))
        return str(run_id)
    return "call:" + secrets.token_hex(8)
