"""The MCP transport's side of an upstream call: hooks towards the caller, the answer (SPEC §11).

:func:`hooks_for_request` builds the :class:`CallHooks` of one ``tools/call`` from the SDK's
request context: progress to the caller's ``progressToken`` (the SDK makes it a no-op without
one), log messages on the request's stream (the SDK applies the caller's level / opt-in), and, for
a handshake-era caller that declared the capability, elicitation and sampling requests relayed as
server-to-client requests tied to the call. A 2026-07-28 caller gets no server-to-client requests
and no ``elicit``/``sample`` hooks here: when it declared the capability, the transport parks the
call and asks in ``input_required`` rounds (:mod:`openexec_mcp.transport.continuations`);
otherwise the upstream's questions are declined.

:func:`upstream_call_result` turns a gate answer for an upstream tool into the MCP result: the
upstream content blocks unchanged, then the one-line summary; ``structuredContent`` is the envelope.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import mcp_types as types
from mcp.shared.message import ServerMessageMetadata
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import TypeAdapter, ValidationError

from openexec_mcp.upstream.hooks import CallHooks

__all__ = ["hooks_for_request", "set_client_level", "upstream_call_result"]

logger = logging.getLogger("openexec_mcp.upstream")

_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
_client_levels: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
"""Handshake-era connection → the level its client set with ``logging/setLevel``."""


def set_client_level(ctx: Any, level: str) -> None:
    """Remember the log level a handshake-era client set (``logging/setLevel``) on its connection."""
    connection = getattr(getattr(ctx, "session", None), "_connection", None)
    if connection is not None:
        _client_levels[connection] = level


def _wants(ctx: Any, level: str) -> bool:
    """Return whether the caller gets an upstream log message (handshake era: once it set a level).

    2026-07-28 clients opt in per request; the SDK applies that itself.
    """
    if getattr(ctx, "protocol_version", None) in MODERN_PROTOCOL_VERSIONS:
        return True
    connection = getattr(getattr(ctx, "session", None), "_connection", None)
    wanted = _client_levels.get(connection) if connection is not None else None
    if wanted is None:
        return False
    rank = {name: index for index, name in enumerate(_LEVELS)}
    return rank.get(level, 0) >= rank.get(wanted, 0)


_BLOCKS: TypeAdapter[list[types.ContentBlock]] = TypeAdapter(list[types.ContentBlock])


def hooks_for_request(ctx: Any) -> CallHooks:
    """Return the hooks that carry an upstream call's side traffic back to this request's caller.

    Args:
        ctx: The SDK's ``ServerRequestContext`` of the ``tools/call`` being gated.
    """
    session = ctx.session
    request_id = getattr(ctx, "request_id", None)
    metadata = ServerMessageMetadata(related_request_id=request_id)

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        await session.report_progress(progress, total, message)

    async def log(params: types.LoggingMessageNotificationParams) -> None:
        if not _wants(ctx, params.level):
            return
        try:
            await session.send_log_message(
                level=params.level, data=params.data, logger=params.logger, related_request_id=request_id
            )
        except Exception:  # best effort: a log line never fails the call
            logger.debug("could not relay an upstream log message", exc_info=True)

    hooks = CallHooks(progress=progress, log=log)
    capabilities: types.ClientCapabilities | None = session.client_capabilities
    if getattr(ctx, "protocol_version", None) in MODERN_PROTOCOL_VERSIONS or capabilities is None:
        return hooks

    if capabilities.elicitation is not None:

        async def elicit(params: types.ElicitRequestParams) -> types.ElicitResult | types.ErrorData:
            try:
                result: types.ElicitResult = await session.send_request(
                    types.ElicitRequest(params=params), types.ElicitResult, metadata=metadata
                )
            except Exception:
                logger.info("relaying an upstream elicitation failed; declined", exc_info=True)
                return types.ElicitResult(action="decline")
            return result

        hooks.elicit = elicit

    if capabilities.sampling is not None:

        async def sample(
            params: types.CreateMessageRequestParams,
        ) -> types.CreateMessageResult | types.CreateMessageResultWithTools | types.ErrorData:
            try:
                result: types.CreateMessageResult = await session.send_request(
                    types.CreateMessageRequest(params=params), types.CreateMessageResult, metadata=metadata
                )
            except Exception:
                logger.info("relaying an upstream sampling request failed", exc_info=True)
                return types.ErrorData(
                    code=types.INTERNAL_ERROR, message="the client did not answer the sampling request"
                )
            return result

        hooks.sample = sample
    return hooks


def upstream_call_result(
    envelope: Mapping[str, Any], summary_line: Callable[[Mapping[str, Any]], str]
) -> types.CallToolResult:
    """Return the MCP result of a gated upstream call (SPEC §11, "Forwarding").

    Args:
        envelope: The SPEC §6 envelope; for an executed (or failed, replayed) upstream call its
            ``result`` is ``{"content": [...], "structuredContent": ..., "isError": ...}``.
        summary_line: The transport's one-line summary of an envelope.

    Returns:
        ``content`` = the upstream blocks unchanged, then the summary (without the result, which
        the blocks already show); ``structuredContent`` = the envelope; ``isError`` unless the
        status is ``executed`` or ``replayed``.
    """
    result = envelope.get("result")
    blocks: list[types.ContentBlock] = []
    if isinstance(result, Mapping) and "content" in result:
        try:
            blocks = _BLOCKS.validate_python(result["content"])
        except ValidationError:
            logger.warning("an upstream result's content blocks did not validate; only the summary is sent")
    summary = summary_line({**envelope, "result": None})
    return types.CallToolResult(
        content=[*blocks, types.TextContent(type="text", text=summary)],
        structured_content=dict(envelope),
        is_error=envelope.get("status") not in ("executed", "replayed"),
    )
