"""An independent cosignature verifier, written from the C2SP texts alone (signed-note, tlog-checkpoint,
tlog-cosignature); it never imports openexec_mcp, so the project's own parsing cannot hide a bug in both.

- signed-note: text, a blank line, then signature lines ``— <name> <base64(4-byte key ID || sig)>``,
  each ending in a newline; the text is separated from them by the last empty line.
- tlog-cosignature (Ed25519): key ID ``SHA-256(name || 0x0A || 0x04 || 32-byte key)[:4]``; the
  signature bytes are ``u64 big-endian timestamp || 64-byte Ed25519 signature`` over
  ``"cosignature/v1\\n" "time <timestamp>\\n" <note text>``.
- Log signatures (signed-note Ed25519): key ID with type byte ``0x01``, signature over the text.
"""

from __future__ import annotations

import base64
import hashlib
import struct

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["IndependentVerificationError", "checkpoint_fields", "verify_cosignature", "verify_log_signature"]


class IndependentVerificationError(Exception):
    """The note does not carry a valid signature by the given key."""


def _split(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    if not note.endswith("\n"):
        raise IndependentVerificationError("a note ends with a newline")
    cut = note.rstrip("\n").rfind("\n\n")
    if cut < 0:
        raise IndependentVerificationError("no blank line before the signatures")
    text, block = note[: cut + 1], note[cut + 2 :]
    lines: list[tuple[str, bytes]] = []
    for line in block.splitlines():
        if not line.startswith("\u2014 "):
            raise IndependentVerificationError(f"not a signature line: {line!r}")
        name, _, blob = line[2:].partition(" ")
        lines.append((name, base64.b64decode(blob, validate=True)))
    return text, lines


def _key_id(name: str, type_byte: int, raw: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([type_byte]) + raw).digest()[:4]


def checkpoint_fields(note: str) -> tuple[str, int, bytes]:
    """Return ``(origin, size, root)`` of a checkpoint note (tlog-checkpoint: the text's first three lines)."""
    text, _ = _split(note)
    origin, size, root = text.split("\n")[:3]
    return origin, int(size), base64.b64decode(root, validate=True)


def verify_log_signature(note: str, name: str, public_raw: bytes) -> None:
    """Require an Ed25519 signed-note signature by ``name`` / ``public_raw``."""
    text, lines = _split(note)
    key_id = _key_id(name, 0x01, public_raw)
    mine = [blob[4:] for line_name, blob in lines if line_name == name and blob[:4] == key_id]
    if not mine:
        raise IndependentVerificationError("no signature by the log key")
    for signature in mine:
        try:
            Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, text.encode())
        except InvalidSignature:
            raise IndependentVerificationError("the log signature does not verify") from None


def verify_cosignature(note: str, name: str, public_raw: bytes) -> int:
    """Verify the Ed25519 cosignature by witness ``name`` on ``note`` and return its timestamp.

    Raises:
        IndependentVerificationError: No line with that name and key ID, a malformed one, a zero
            timestamp, or a signature that does not verify.
    """
    text, lines = _split(note)
    key_id = _key_id(name, 0x04, public_raw)
    mine = [blob[4:] for line_name, blob in lines if line_name == name and blob[:4] == key_id]
    if not mine:
        raise IndependentVerificationError(f"no cosignature by {name}")
    timestamp = 0
    for signature in mine:
        if len(signature) != 72:
            raise IndependentVerificationError("a cosignature is 8 bytes of timestamp and 64 of signature")
        (timestamp,) = struct.unpack(">Q", signature[:8])
        if timestamp == 0:
            raise IndependentVerificationError("a zero timestamp")
        message = b"cosignature/v1\ntime " + str(timestamp).encode() + b"\n" + text.encode()
        try:
            Ed25519PublicKey.from_public_bytes(public_raw).verify(signature[8:], message)
        except InvalidSignature:
            raise IndependentVerificationError(f"the cosignature by {name} does not verify") from None
    return timestamp
