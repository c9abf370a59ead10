r"""The raw-bytes check in front of the SDK's JSON parser, on every MCP transport (SPEC §2, §10).

The SDK parses each JSON-RPC message with a lenient parser before any hook runs: a duplicate key
keeps its last value (so a receipt would sign what the second key said), and a lone surrogate
(``"\\ud800"``) makes the message unreadable to it (over stdio the request got no answer at all).
:class:`IngressCheck` reads the raw frame first, with the one strict parser of
:mod:`openexec_mcp.core.canonical`, and hands the SDK either the frame unchanged or a rewritten
one that the SDK answers for the same request id:

- ``tools/call`` → the same id and tool name, empty arguments, and a sealed ``_meta`` marker
  that :class:`~openexec_mcp.transport.mcp.GateExtension` turns into the ``invalid_request``
  envelope (status ``denied``, ``exec_id`` null, no receipt; a ``CallToolResult`` with
  ``isError``). Nothing reaches the gate, so nothing runs and the nonce stays free.
- another request → the same id with a method no server has, which the SDK answers with a
  JSON-RPC error (``-32601``) for that id.
- a response (a client's answer to our elicitation) → a JSON-RPC error response for its id, so
  the approval question fails closed.
- a notification → dropped.

Frames that are not JSON at all, or have no readable id, go to the SDK unchanged (it answers
``-32700`` / ``-32600``). The cheap bound comes first: a frame over
``4 × limits.max_payload_bytes + 64 KiB`` (the arguments may be written with escapes and
whitespace; the rest of the frame carries ``_meta`` and an approval artifact of at most 16 KiB)
is refused before the strict parse, and a ``tools/call`` frame that large never reaches the gate,
which would canonicalize it on the event loop. Frames above 64 KiB are parsed on a worker thread.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

import anyio.to_thread

from openexec_mcp.core.canonical import json_object, parse_json_strict
from openexec_mcp.errors import MalformedInputError

__all__ = ["INGRESS_META", "IngressCheck", "IngressVerdict", "guarded_lines", "too_many_elements"]

logger = logging.getLogger("openexec_mcp.transport.ingress")

INGRESS_META: Final = "dev.openexec/ingress"
"""The ``_meta`` key of a rewritten ``tools/call``: ``{"seal": <per-process secret>, "message": str}``."""

REFUSED_METHOD: Final = "dev.openexec/refused-malformed-request"
"""The method a refused non-``tools/call`` request is rewritten to (unknown: ``-32601``)."""

ENVELOPE_ALLOWANCE_BYTES: Final = 64 * 1024
"""Raw bytes allowed in a frame beside the arguments (``_meta``, approval artifact), in bytes."""

THREAD_THRESHOLD_BYTES: Final = 64 * 1024
"""Frames larger than this are parsed on a worker thread, in bytes."""

HARD_LIMIT_BYTES: Final = 4 * 1024 * 1024
"""The SDK's own body limit (4 MiB): past it the frame is the SDK's to refuse (HTTP 413)."""


@dataclass(frozen=True, slots=True)
class IngressVerdict:
    """What the strict read of one frame found.

    Attributes:
        message: Why the frame breaks SPEC §2, or ``None``.
        frame: The parse (lenient, last key wins, when the strict one failed), when it is an object.
        shape: Why a strictly valid frame is still no JSON-RPC message the SDK can read (a
            ``method`` that is not a string, an id that is not a string or integer, a batch),
            or ``None``. Only stdio acts on it: over HTTP the SDK answers such a body itself.
    """

    message: str | None
    frame: dict[str, Any] | None
    shape: str | None = None

    @property
    def passes(self) -> bool:
        """Whether the frame may go to the SDK unchanged."""
        return self.message is None and self.shape is None


class IngressCheck:
    """Reads raw JSON-RPC frames strictly and rewrites refused ones (see the module docstring).

    Args:
        max_payload_bytes: ``limits.max_payload_bytes``; the raw frame bound is four times this
            plus :data:`ENVELOPE_ALLOWANCE_BYTES`.
    """

    def __init__(self, max_payload_bytes: int) -> None:
        self.max_payload_bytes = max_payload_bytes
        self.max_frame_bytes = 4 * max_payload_bytes + ENVELOPE_ALLOWANCE_BYTES
        self._seal = secrets.token_hex(16)

    def is_sealed(self, marker: Any) -> str | None:
        """Return the refusal message of a marker this process wrote, else ``None``."""
        found = json_object(marker)
        if found is None:
            return None
        seal, message = found.get("seal"), found.get("message")
        if isinstance(seal, str) and isinstance(message, str) and hmac.compare_digest(seal, self._seal):
            return message
        return None

    def inspect(self, data: bytes) -> IngressVerdict:
        """Read one raw frame; see :class:`IngressVerdict`. Never raises."""
        if len(data) > HARD_LIMIT_BYTES:
            return IngressVerdict(None, None)  # the SDK refuses it whole (413 / parse error)
        try:
            value = parse_json_strict(data, max_raw_bytes=self.max_frame_bytes)
        except MalformedInputError as exc:
            return IngressVerdict(exc.message, _lenient(data))
        frame = json_object(value)
        if frame is not None and frame.get("method") == "tools/call" and len(data) > self.max_payload_bytes:
            params = json_object(frame.get("params")) or {}
            too_many = too_many_elements(params.get("arguments"), self.max_payload_bytes)
            if too_many is not None:
                return IngressVerdict(too_many, frame)
        return IngressVerdict(None, frame, _shape_error(frame))

    def error_reply(self, verdict: IngressVerdict) -> bytes | None:
        """Return the JSON-RPC error line answering a refused request directly (stdio), or ``None``.

        ``-32700`` (id null) when the frame is not JSON, ``-32600`` with the request's id when it
        is JSON but not a readable request; ``None`` for a notification or a response (nothing
        to answer) and for a refused ``tools/call`` (answered with the envelope, see
        :meth:`rewrite`).
        """
        frame = verdict.frame
        if frame is None:
            if verdict.message is not None and verdict.message.startswith("invalid JSON"):
                error = {"code": -32700, "message": "parse error: the frame is not JSON"}
                return _dump({"jsonrpc": "2.0", "id": None, "error": error})
            frame = {}
        request_id = frame.get("id")
        if "method" not in frame and "id" in frame:
            return None  # a response
        if verdict.shape is None and frame.get("method") == "tools/call":
            return None
        if not isinstance(request_id, (str, int)) or isinstance(request_id, bool):
            if "id" not in frame and isinstance(frame.get("method"), str):
                return None  # a notification
            request_id = None
        reason = verdict.message or verdict.shape or "not a JSON-RPC request"
        error = {"code": -32600, "message": f"invalid request: {reason}"}
        return _dump({"jsonrpc": "2.0", "id": _clean(request_id), "error": error})

    def rewrite(self, verdict: IngressVerdict, data: bytes) -> bytes | None:
        """Return the frame to hand the SDK: ``data`` itself, a rewritten frame, or ``None`` (drop it)."""
        frame, message = verdict.frame, verdict.message
        if message is None or frame is None or ("id" not in frame and "method" not in frame):
            return data  # passes, or not JSON-RPC at all: the SDK answers it as it would
        request_id = _clean(frame.get("id"))
        method = frame.get("method")
        params = json_object(frame.get("params")) or {}
        meta = json_object(_clean(params.get("_meta"))) or {}
        meta.pop(INGRESS_META, None)
        logger.warning("refused a malformed %s frame: %s", method if isinstance(method, str) else "response", message)
        if method is None:
            error = {"code": -32600, "message": f"malformed response: {message}"}
            rewritten: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "error": error}
        elif "id" not in frame:
            return None
        elif method == "tools/call":
            name = _clean(params.get("name"))
            meta[INGRESS_META] = {"seal": self._seal, "message": message}
            call = {"name": name if isinstance(name, str) else "", "arguments": {}, "_meta": meta}
            rewritten = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": call}
        else:
            rewritten = {"jsonrpc": "2.0", "id": request_id, "method": REFUSED_METHOD, "params": {"_meta": meta}}
        return _dump(rewritten)

    async def inspect_async(self, data: bytes) -> IngressVerdict:
        """:meth:`inspect`, off the event loop for frames above the thread threshold."""
        if len(data) > THREAD_THRESHOLD_BYTES:
            return await anyio.to_thread.run_sync(self.inspect, data)
        return self.inspect(data)

    async def check(self, data: bytes) -> bytes | None:
        """Inspect and rewrite one frame; frames above the thread threshold are read off the event loop."""
        if len(data) > THREAD_THRESHOLD_BYTES:
            return await anyio.to_thread.run_sync(self._check_sync, data)
        return self._check_sync(data)

    def _check_sync(self, data: bytes) -> bytes | None:
        return self.rewrite(self.inspect(data), data)


def too_many_elements(value: Any, max_payload_bytes: int) -> str | None:
    """Say whether ``value`` has more JSON elements than a canonical payload of the limit can hold.

    A cheap bound before any canonicalization (SPEC §2): every element of a canonical payload
    takes at least two bytes (``0,``; a member at least ``"":0,``), so more than
    ``max_payload_bytes / 2`` elements is over the size limit whatever their values.

    Returns:
        The refusal message, or ``None`` when the count is within the bound.
    """
    bound = max_payload_bytes // 2 + 1
    count = 0
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        count += 1
        if count > bound:
            return f"more than {bound} JSON elements; a payload of {max_payload_bytes} bytes cannot hold them"
        if isinstance(item, dict):
            stack.extend(cast("dict[str, Any]", item).values())
        elif isinstance(item, list):
            stack.extend(cast("list[Any]", item))
    return None


def _dump(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _shape_error(frame: dict[str, Any] | None) -> str | None:
    """Say why a parsed frame is no JSON-RPC 2.0 message the SDK reads, or ``None``."""
    if frame is None:
        return "a frame must be one JSON-RPC object (batches are not served)"
    if frame.get("jsonrpc") != "2.0":
        return "'jsonrpc' must be \"2.0\""
    request_id = frame.get("id")
    if "id" in frame and (isinstance(request_id, bool) or not isinstance(request_id, (str, int, type(None)))):
        return "'id' must be a string or an integer"
    if "method" in frame:
        if not isinstance(frame["method"], str):
            return "'method' must be a string"
        if "params" in frame and json_object(frame["params"]) is None:
            return "'params' must be an object"
        if "id" in frame and request_id is None:
            return "'id' must be a string or an integer"
        return None
    if "id" in frame and ("result" in frame or "error" in frame):
        return None
    return "neither a request, a notification nor a response"


def _lenient(data: bytes) -> dict[str, Any] | None:
    """Parse as the SDK would (last key wins, lone surrogates kept) only to learn id, method and name."""
    try:
        value: Any = json.loads(data.decode("utf-8", errors="replace"))
    except (ValueError, RecursionError):
        return None
    return json_object(value)


def _clean(value: Any) -> Any:
    """Replace lone surrogates (which the SDK cannot read) in strings, keys included."""
    if isinstance(value, str):
        return value.encode("utf-8", errors="replace").decode("utf-8")
    if isinstance(value, list):
        return [_clean(item) for item in cast("list[Any]", value)]
    if isinstance(value, Mapping):
        return {_clean(key): _clean(item) for key, item in cast("Mapping[Any, Any]", value).items()}
    return value


async def guarded_lines(
    lines: AsyncIterator[str], check: IngressCheck, reply: Callable[[bytes], Awaitable[None]]
) -> AsyncIterator[str]:
    r"""Yield stdio frames (one JSON-RPC message a line) after the raw-bytes check.

    A refused ``tools/call`` is rewritten (the SDK answers the envelope for its id); any other
    request the SDK could not read, or that breaks SPEC §2, is answered here through ``reply``
    (``-32600`` with its id, ``-32700`` when not JSON), since the SDK would answer nothing.

    The SDK decodes stdin as UTF-8 with replacement characters, so encoding a line back gives the
    bytes the client sent for every valid UTF-8 line; escapes (``\ud800``) are untouched text.
    """
    async for line in lines:
        if not line.strip():
            yield line
            continue
        data = line.encode("utf-8", errors="surrogatepass")
        verdict = await check.inspect_async(data)
        if verdict.passes:
            yield line
            continue
        answer = check.error_reply(verdict)
        if answer is not None:
            logger.warning("answered an unreadable request: %s", answer[:200])
            await reply(answer)
            continue
        rewritten = check.rewrite(verdict, data) if verdict.message is not None else None
        if rewritten is not None:
            yield rewritten.decode("utf-8") + "\n"
