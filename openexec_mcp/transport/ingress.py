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
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

import anyio.to_thread

from openexec_mcp.core.canonical import json_object, parse_json_strict
from openexec_mcp.errors import MalformedInputError

__all__ = ["INGRESS_META", "IngressCheck", "IngressVerdict", "guarded_lines"]

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
        message: Why the frame was refused, or ``None`` when it may pass unchanged.
        frame: The lenient parse (last key wins), when one was possible.
    """

    message: str | None
    frame: dict[str, Any] | None


class IngressCheck:
    """Reads raw JSON-RPC frames strictly and rewrites refused ones (see the module docstring).

    Args:
        max_payload_bytes: ``limits.max_payload_bytes``; the raw frame bound is four times this
            plus :data:`ENVELOPE_ALLOWANCE_BYTES`.
    """

    def __init__(self, max_payload_bytes: int) -> None:
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
            parse_json_strict(data, max_raw_bytes=self.max_frame_bytes)
        except MalformedInputError as exc:
            return IngressVerdict(exc.message, _lenient(data))
        return IngressVerdict(None, None)

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
        return json.dumps(rewritten, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    async def check(self, data: bytes) -> bytes | None:
        """Inspect and rewrite one frame; frames above the thread threshold are read off the event loop."""
        if len(data) > THREAD_THRESHOLD_BYTES:
            return await anyio.to_thread.run_sync(self._check_sync, data)
        return self._check_sync(data)

    def _check_sync(self, data: bytes) -> bytes | None:
        return self.rewrite(self.inspect(data), data)


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


async def guarded_lines(lines: AsyncIterator[str], check: IngressCheck) -> AsyncIterator[str]:
    r"""Yield stdio frames (one JSON-RPC message a line) after the raw-bytes check.

    The SDK decodes stdin as UTF-8 with replacement characters, so encoding a line back gives the
    bytes the client sent for every valid UTF-8 line; escapes (``\\ud800``) are untouched text.
    """
    async for line in lines:
        if not line.strip():
            yield line
            continue
        data = line.encode("utf-8", errors="surrogatepass")
        checked = await check.check(data)
        if checked is None:
            continue
        yield line if checked is data else checked.decode("utf-8") + "\n"
