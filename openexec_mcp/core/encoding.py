"""Strict base64 decoding and DSSE pre-authentication encoding (PAE).

DSSE (https://github.com/secure-systems-lab/dsse, protocol.md) signs
``PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`` where ``LEN`` is the
ASCII decimal byte length; SPEC §5 and §7 use it for approval artifacts and receipts alike.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

from openexec_mcp.errors import MalformedInputError

__all__ = ["b64decode_strict", "b64encode", "pae"]

_STANDARD: Final = re.compile(r"\A[A-Za-z0-9+/]*={0,2}\Z")
_URLSAFE: Final = re.compile(r"\A[A-Za-z0-9_-]*={0,2}\Z")


def pae(payload_type: str, body: bytes) -> bytes:
    """Return the DSSE v1 pre-authentication encoding of ``body`` under ``payload_type``.

    Args:
        payload_type: The media type, e.g. ``application/vnd.openexec.receipt+json``.
        body: The payload bytes (for openexec-mcp always RFC 8785 JSON).

    Returns:
        ``b"DSSEv1 <len(type)> <type> <len(body)> " + body``; lengths are byte counts.
    """
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(body), body)


def b64encode(data: bytes) -> str:
    """Return standard base64 (RFC 4648 §4) with padding, as ASCII text."""
    return base64.b64encode(data).decode("ascii")


def b64decode_strict(text: str) -> bytes:
    """Decode standard or URL-safe base64 (RFC 4648 §4, §5), padding optional, strictly.

    Args:
        text: Untrusted text. Mixing the two alphabets, whitespace, characters outside the
            alphabet, misplaced padding, or non-zero trailing bits are all refused, so one byte
            string has exactly one accepted spelling per alphabet (with or without padding).

    Returns:
        The decoded bytes.

    Raises:
        MalformedInputError: ``text`` is not strictly valid base64.
    """
    if not isinstance(text, str):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise MalformedInputError("base64 value must be a string")
    if _STANDARD.match(text):
        alphabet = b"+/"
    elif _URLSAFE.match(text):
        alphabet = b"-_"
    else:
        raise MalformedInputError("base64 value has a character outside the alphabet")
    stripped = text.rstrip("=")
    if len(stripped) % 4 == 1:
        raise MalformedInputError("base64 value has an impossible length")
    if text != stripped and len(text) % 4 != 0:
        raise MalformedInputError("base64 value has misplaced padding")
    padded = stripped + "=" * (-len(stripped) % 4)
    try:
        decoded = base64.b64decode(padded, altchars=alphabet, validate=True)
    except binascii.Error as exc:
        raise MalformedInputError(f"base64 value does not decode: {exc}") from None
    # Refuse non-canonical encodings (non-zero unused bits), which would let two spellings decode
    # to the same bytes.
    if base64.b64encode(decoded, altchars=alphabet).decode("ascii").rstrip("=") != stripped:
        raise MalformedInputError("base64 value has non-zero trailing bits")
    return decoded
