"""The action request and its hash (SPEC §3).

The **action request** is ``{"action": <tool name>, "payload": <arguments without nonce>,
"nonce": <nonce>}``; the **action_hash** is the lowercase hex SHA-256 of its RFC 8785 bytes. An
approval artifact names this hash, so it binds to one exact call: one action, one payload, one
nonce.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from openexec_mcp.core.canonical import canonicalize, sha256_hex
from openexec_mcp.errors import MalformedInputError

__all__ = [
    "NONCE_PATTERN",
    "RUN_ID_PATTERN",
    "TOOL_NAME_PATTERN",
    "ActionRequest",
    "action_request_bytes",
    "compute_action_hash",
    "parse_nonce",
    "parse_run_id",
    "parse_tool_name",
]

TOOL_NAME_PATTERN: Final = re.compile(r"\A[A-Za-z][A-Za-z0-9_.-]{0,63}\Z")
"""Tool and action names (SPEC §1)."""

NONCE_PATTERN: Final = re.compile(r"\A[A-Za-z0-9._:-]{8,128}\Z")
"""The reserved ``nonce`` argument: 8 to 128 characters of ``[A-Za-z0-9._:-]`` (SPEC §1)."""

RUN_ID_PATTERN: Final = re.compile(r"\A[A-Za-z0-9._:-]{1,128}\Z")
"""A caller-supplied ``run_id`` (SPEC §7): 1 to 128 characters of ``[A-Za-z0-9._:-]``."""


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """One exact call: the object that action hashes and approvals are about (SPEC §3).

    Attributes:
        action: The tool name.
        payload: The tool arguments without ``nonce``; JSON-compatible and already checked.
        nonce: The caller's nonce.
    """

    action: str
    payload: dict[str, Any]
    nonce: str

    def to_json(self) -> dict[str, Any]:
        """Return the action request as the JSON object of SPEC §3."""
        return {"action": self.action, "payload": self.payload, "nonce": self.nonce}

    def canonical_bytes(self) -> bytes:
        """Return the RFC 8785 bytes of :meth:`to_json`."""
        return canonicalize(self.to_json())

    def action_hash(self) -> str:
        """Return the action_hash: 64 lowercase hex characters (SHA-256 of the JCS bytes)."""
        return sha256_hex(self.canonical_bytes())


def action_request_bytes(action: str, nonce: str, payload_canonical: bytes) -> bytes:
    """Return the RFC 8785 bytes of the action request from already-canonical payload bytes.

    RFC 8785 §3.2.3 orders members by UTF-16 code units, and ``"action" < "nonce" < "payload"``,
    so the canonical request is the three members in that order around the payload's own
    canonical bytes. This spares the gate canonicalizing the payload a second time; a property
    test pins it to ``canonicalize(ActionRequest(...).to_json())``.

    Args:
        action: The tool name (checked by the caller).
        nonce: The nonce (checked by the caller).
        payload_canonical: ``canonicalize(payload)`` for a JSON object payload.

    Raises:
        MalformedInputError: ``action`` or ``nonce`` cannot be canonicalized.
    """
    return b'{"action":%s,"nonce":%s,"payload":%s}' % (canonicalize(action), canonicalize(nonce), payload_canonical)


def compute_action_hash(action: str, payload: dict[str, Any], nonce: str) -> str:
    """Return the action_hash of SPEC §3 for ``(action, payload, nonce)`` (64 lowercase hex)."""
    return ActionRequest(action, payload, nonce).action_hash()


def parse_nonce(value: Any) -> str:
    """Return ``value`` if it is a valid nonce (SPEC §1), else raise.

    Raises:
        MalformedInputError: ``value`` is missing, not a string, or outside the nonce alphabet or
            length (8 to 128 characters).
    """
    if value is None:
        raise MalformedInputError("missing required argument 'nonce'")
    if not isinstance(value, str) or not NONCE_PATTERN.match(value):
        raise MalformedInputError("'nonce' must be 8 to 128 characters of [A-Za-z0-9._:-]")
    return value


def parse_tool_name(value: Any) -> str:
    """Return ``value`` if it is a valid tool name (SPEC §1), else raise.

    Raises:
        MalformedInputError: ``value`` does not match ``^[A-Za-z][A-Za-z0-9_.-]{0,63}$``.
    """
    if not isinstance(value, str) or not TOOL_NAME_PATTERN.match(value):
        raise MalformedInputError("action name must match ^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
    return value


def parse_run_id(value: Any) -> str:
    """Return ``value`` if it is a valid caller-supplied run_id, else raise.

    Raises:
        MalformedInputError: ``value`` is not 1 to 128 characters of ``[A-Za-z0-9._:-]``.
    """
    if not isinstance(value, str) or not RUN_ID_PATTERN.match(value):
        raise MalformedInputError("run_id must be 1 to 128 characters of [A-Za-z0-9._:-]")
    return value
