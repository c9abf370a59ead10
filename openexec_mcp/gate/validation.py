"""Step 1 of the gate: validate one request before anything is recorded (SPEC §2, §4, §11).

:func:`validate_request` takes the untrusted tool arguments and returns the parsed argument, the
payload and its canonical bytes, and the gate's nonce. Cheap bounds come first (SPEC §2): a
payload that cannot fit the limits is refused before any canonicalization, and a large one is
parsed off the event loop. Every refusal is :class:`~openexec_mcp.errors.InvalidRequestError`;
nothing is recorded and nothing is claimed.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

import anyio.to_thread

from openexec_mcp.core.action import parse_nonce
from openexec_mcp.core.canonical import check_json_value, exceeds_size
from openexec_mcp.errors import InvalidRequestError
from openexec_mcp.gate.receipts import NonceSource
from openexec_mcp.registry import Action

__all__ = ["INLINE_PARSE_BYTES", "request_nonce", "validate_request"]

INLINE_PARSE_BYTES = 16 * 1024
"""Payloads up to this canonical size are validated on the event loop; larger ones on a thread."""


async def validate_request(
    action: Action, arguments: Any, meta_nonce: Any, limits: Mapping[str, int]
) -> tuple[Any, dict[str, Any], bytes, str, NonceSource]:
    """Return ``(argument, payload, payload_bytes, nonce, nonce_source)`` for one call of ``action``.

    Args:
        action: The exposed action called.
        arguments: The untrusted tool arguments.
        meta_nonce: The untrusted ``_meta["dev.openexec/nonce"]``, or ``None``.
        limits: The ingress limits in force (``max_payload_bytes``, ``max_depth``).

    Returns:
        The action's parsed argument, the payload (the arguments without a reserved ``nonce``),
        its RFC 8785 bytes, the nonce and its source (``client`` or ``server``).

    Raises:
        InvalidRequestError: Anything malformed; nothing is recorded.
    """
    if not isinstance(arguments, dict):
        raise InvalidRequestError("arguments must be a JSON object")
    payload: dict[str, Any] = dict(arguments)  # pyright: ignore[reportUnknownArgumentType]
    nonce, nonce_source = request_nonce(action, payload, meta_nonce)
    # Cheap bounds first: a payload that cannot fit is refused before any canonicalization.
    if exceeds_size(payload, max_bytes=limits["max_payload_bytes"]):
        raise InvalidRequestError(f"payload exceeds {limits['max_payload_bytes']} bytes")
    payload_bytes = check_json_value(payload, max_depth=limits["max_depth"], max_bytes=limits["max_payload_bytes"])
    if len(payload_bytes) > INLINE_PARSE_BYTES:
        # Heavy validation off the event loop: a large payload must not stall other clients.
        argument = await anyio.to_thread.run_sync(action.parse_payload, payload, payload_bytes)
    else:
        argument = action.parse_payload(payload, payload_bytes)
    return argument, payload, payload_bytes, nonce, nonce_source


def request_nonce(action: Action, payload: dict[str, Any], meta_nonce: Any) -> tuple[str, NonceSource]:
    """Return the gate's nonce and its source: ``_meta``, else the ``nonce`` argument, else a server nonce.

    A ``nonce`` argument that the action does not declare is reserved: it is removed from
    ``payload`` (in place), whichever of the two carries the nonce.

    Raises:
        InvalidRequestError: The nonce is malformed, or missing where the action requires one.
    """
    if meta_nonce is not None:
        if not action.declares_nonce:
            payload.pop("nonce", None)  # the reserved argument is not payload, whichever carries the nonce
        return parse_nonce(meta_nonce), "client"
    if not action.declares_nonce and "nonce" in payload:
        return parse_nonce(payload.pop("nonce")), "client"
    if not action.nonce_required:
        return "srv:" + secrets.token_hex(16), "server"
    where = '_meta["dev.openexec/nonce"]' if action.declares_nonce else "the 'nonce' argument"
    raise InvalidRequestError(f"a nonce is required in {where}")
