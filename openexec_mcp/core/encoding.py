"""Strict base64 decoding and DSSE pre-authentication encoding (PAE).

DSSE (https://github.com/secure-systems-lab/dsse, protocol.md) signs
``PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`` where ``LEN`` is the
ASCII decimal byte length; SPEC §5 and §7 use it for approval artifacts and receipts alike.

:func:`b64decode_strict` is the package's only base64 decoder: signatures, receipt payloads,
public keys, checkpoint notes and proofs all go through it, so "strict" means one thing.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

from openexec_mcp.errors import MalformedInputError

__all__ = ["b64decode_strict", "b64encode", "pae"]

_URLSAFE_TO_STANDARD: Final = bytes.maketrans(b"-_", b"+/")
_STANDARD_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# The value of each base64 character, to check that the bits after the last byte are zero.
_VALUE: Final = {char: index for index, char in enumerate(_STANDARD_ALPHABET)}


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
            alphabet, misplaced or excess padding, an impossible length, or non-zero trailing
            bits are all refused, so one byte string has exactly one accepted spelling per
            alphabet (with or without padding).

    Returns:
        The decoded bytes.

    Raises:
        MalformedInputError: ``text`` is not strictly valid base64.
    """
    if not isinstance(text, str):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise MalformedInputError("base64 value must be a string")
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raise MalformedInputError("base64 value has a character outside the alphabet") from None
    if (b"-" in raw or b"_" in raw) and (b"+" in raw or b"/" in raw):
        raise MalformedInputError("base64 value mixes the standard and URL-safe alphabets")
    standard = raw.translate(_URLSAFE_TO_STANDARD)
    stripped = standard.rstrip(b"=")
    padding = len(standard) - len(stripped)
    if len(stripped) % 4 == 1:
        raise MalformedInputError("base64 value has an impossible length")
    if padding and (padding > 2 or len(standard) % 4 != 0):
        raise MalformedInputError("base64 value has misplaced padding")
    padded = stripped + b"=" * (-len(stripped) % 4)
    try:
        # strict_mode refuses characters outside the alphabet (whitespace included) and padding
        # anywhere but at the end.
        decoded = binascii.a2b_base64(padded, strict_mode=True)
    except binascii.Error:
        raise MalformedInputError("base64 value has a character outside the alphabet") from None
    # Refuse non-canonical encodings (non-zero unused bits), which would let two spellings decode
    # to the same bytes: 2 leftover characters carry 4 unused bits, 3 carry 2.
    leftover = len(stripped) % 4
    if leftover and _VALUE[stripped[-1]] & (0x0F if leftover == 2 else 0x03):
        raise MalformedInputError("base64 value has non-zero trailing bits")
    return decoded
