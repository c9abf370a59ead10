"""What an upstream call came to, as the gate sees it (SPEC §11): result JSON and failure classes.

:func:`result_json` is the JSON form of an upstream ``CallToolResult`` that the gate hashes;
:func:`classify` maps a call that got no result to :class:`UpstreamError` (the upstream
answered, with an error), :class:`UpstreamUnavailableError` (nothing was sent) or
:class:`OutcomeUnknownError` (sent, and no answer).
"""

from __future__ import annotations

from typing import Any

import mcp_types as types
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from openexec_mcp.errors import OutcomeUnknownError, UpstreamError, UpstreamUnavailableError
from openexec_mcp.upstream.streams import SendProbe

__all__ = ["classify", "describe", "error_result", "result_json"]


def result_json(result: types.CallToolResult) -> dict[str, Any]:
    """Return the JSON form of an upstream result that the gate hashes (SPEC §11).

    Returns:
        ``{"content": [block as MCP JSON, ...], "structuredContent": obj | None, "isError": bool}``.
    """
    return {
        "content": [block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in result.content],
        "structuredContent": result.structured_content,
        "isError": bool(result.is_error),
    }


def error_result(text: str) -> dict[str, Any]:
    """Return an ``isError`` result with one text block ``text`` (the shape of :func:`result_json`)."""
    return {"content": [{"type": "text", "text": text}], "structuredContent": None, "isError": True}


def classify(where: str, failure: BaseException | None, probe: SendProbe, call_timeout_seconds: float) -> Exception:
    """Return the error that a forwarded call which got no result raises (SPEC §11 outcomes).

    Args:
        where: ``upstream 'name' tool 'tool'``, the start of each message.
        failure: What the SDK raised (``None``: nothing).
        probe: What the transport saw of the request.
        call_timeout_seconds: The upstream's call deadline, for the message.

    Returns:
        :class:`UpstreamUnavailableError` when nothing was sent; :class:`UpstreamError` (with an
        ``isError`` result) for a JSON-RPC error or an invalid result; otherwise
        :class:`OutcomeUnknownError`.
    """
    if probe.connect_failed or not probe.written:
        return UpstreamUnavailableError(f"{where}: the upstream is not reachable; nothing was sent")
    if isinstance(failure, MCPError):
        code = failure.error.code
        if code == types.REQUEST_TIMEOUT:
            return OutcomeUnknownError(f"{where}: no answer within {call_timeout_seconds:g} s")
        if code == types.CONNECTION_CLOSED:
            return OutcomeUnknownError(f"{where}: the connection ended before the answer")
        if code == types.INTERNAL_ERROR and failure.error.message == "Server returned an error response":
            # An HTTP 5xx the SDK turned into an error: the upstream may or may not have run it.
            return OutcomeUnknownError(f"{where}: the upstream answered HTTP 5xx")
        text = f"upstream JSON-RPC error {code}: {failure.error.message}"
        return UpstreamError(f"{where} answered a JSON-RPC error {code}", result=error_result(text))
    if isinstance(failure, ValidationError | RuntimeError):
        # The upstream answered, but not with a result we can pass on (shape, outputSchema).
        return UpstreamError(f"{where} answered an invalid result", result=error_result("invalid upstream result"))
    return OutcomeUnknownError(f"{where}: {describe(failure)} after the request was sent")


def describe(exc: BaseException | None) -> str:
    """Describe ``exc`` in one line for logs and messages (groups flattened)."""
    if exc is None:
        return "no answer"
    if isinstance(exc, MCPError):
        return f"MCP error {exc.error.code}: {exc.error.message}"
    if isinstance(exc, BaseExceptionGroup):
        inner: tuple[BaseException, ...] = exc.exceptions  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        return "; ".join(describe(one) for one in inner)
    return f"{type(exc).__name__}: {exc}"
