r"""Ledger checkpoints: C2SP ``tlog-checkpoint`` bodies in C2SP ``signed-note`` envelopes (SPEC §7, §10).

A signed note (c2sp.org/signed-note) is a UTF-8 text ending in a newline, a blank line, and one
or more signature lines ``— <key name> <base64(key ID || signature)>`` (U+2014 em dash). With
Ed25519 the key ID is ``SHA-256(key name || 0x0A || 0x01 || 32-byte public key)[:4]``.

A checkpoint (c2sp.org/tlog-checkpoint) is a note whose text is exactly::

    <origin>\n<tree size, ASCII decimal>\n<base64 root hash>\n

openexec-mcp signs with name = origin = ``server_id``. Extension lines are refused: the spec
does not recommend them and this ledger never writes them. Signatures by other keys are kept
and ignored, as the spec requires.

``parse_*`` raise :class:`~openexec_mcp.errors.MalformedInputError`; ``verify_*`` raise
:class:`~openexec_mcp.errors.VerificationError` with ``reason`` ``malformed_note``,
``malformed_checkpoint``, ``missing_signature``, ``bad_signature`` or ``origin_mismatch``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from openexec_mcp.core.encoding import b64decode_strict, b64encode
from openexec_mcp.core.tlog.merkle import HASH_SIZE, MAX_TREE_SIZE
from openexec_mcp.errors import MalformedInputError, VerificationError

__all__ = [
    "MAX_NOTE_BYTES",
    "MAX_NOTE_SIGNATURES",
    "Checkpoint",
    "NoteSignature",
    "SignedNote",
    "build_checkpoint",
    "is_valid_key_name",
    "note_key_id",
    "parse_checkpoint",
    "parse_note",
    "sign_checkpoint",
    "sign_note",
    "verify_checkpoint",
    "verify_note",
]

MAX_NOTE_SIGNATURES: Final = 100
"""Most signature lines accepted in one note (the spec requires at least 16)."""

MAX_NOTE_BYTES: Final = 1 << 20
"""Largest note accepted, in bytes of UTF-8 (1 MiB)."""

_ED25519: Final = b"\x01"
_SIG_PREFIX: Final = "\u2014 "
_CONTROL: Final = re.compile(r"[\x00-\x09\x0b-\x1f]")
_DECIMAL: Final = re.compile(r"\A(?:0|[1-9][0-9]{0,18})\Z")


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line.

    Attributes:
        name: The key name.
        key_id: The 4-byte key ID.
        signature: The signature bytes after the key ID (64 for Ed25519).

    """

    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class SignedNote:
    """A parsed signed note; its text is untrusted until :func:`verify_note` returns it.

    Attributes:
        text: The signed text, up to and including its final newline.
        signatures: Every signature line, in order, whatever its key.

    """

    text: str
    signatures: tuple[NoteSignature, ...]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A checkpoint: the signed tree head of a log.

    Attributes:
        origin: The log's origin line (openexec-mcp: ``server_id``).
        size: The tree size, ``0 <= size <= MAX_TREE_SIZE``.
        root: The 32-byte RFC 6962 root hash of the first ``size`` leaves.
        signatures: The note's signature lines, including any from other keys (e.g. witnesses).

    """

    origin: str
    size: int
    root: bytes
    signatures: tuple[NoteSignature, ...] = ()


def is_valid_key_name(name: str) -> bool:
    """Return whether ``name`` may name a note key: non-empty, no whitespace, ``+`` or control."""
    return bool(name) and "+" not in name and not any(ch.isspace() or ch < " " for ch in name)


def note_key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    """Return the 4-byte Ed25519 key ID ``SHA-256(name || 0x0A || 0x01 || public key)[:4]``."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(name.encode("utf-8") + b"\n" + _ED25519 + raw).digest()[:4]


def _check_text(text: str) -> None:
    if _CONTROL.search(text):
        raise MalformedInputError("note contains a control character")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise MalformedInputError("note is not valid UTF-8") from None
    if size > MAX_NOTE_BYTES:
        raise MalformedInputError(f"note is {size} bytes; the limit is {MAX_NOTE_BYTES}")


def _b64_canonical(text: str, what: str) -> bytes:
    # Standard alphabet with padding, one spelling per value (c2sp.org/signed-note §Conventions).
    value = b64decode_strict(text)
    if b64encode(value) != text:
        raise MalformedInputError(f"{what} is not canonical standard base64")
    return value


def sign_note(text: str, name: str, private_key: Ed25519PrivateKey) -> str:
    r"""Sign ``text`` as a signed note with one Ed25519 signature (c2sp.org/signed-note).

    Args:
        text: Trusted note text: non-empty, ends with ``\n``, no control character but ``\n``.
        name: The key name; see :func:`is_valid_key_name`.
        private_key: The signing key.

    Returns:
        ``text + "\n" + "— <name> <base64(key ID || signature)>\n"``.

    Raises:
        ValueError: ``text`` or ``name`` break the rules above.

    """
    if not text.endswith("\n") or _CONTROL.search(text) or not is_valid_key_name(name):
        raise ValueError("note text must end with a newline and the key name must be valid")
    key_id = note_key_id(name, private_key.public_key())
    signature = private_key.sign(text.encode("utf-8"))
    return f"{text}\n{_SIG_PREFIX}{name} {b64encode(key_id + signature)}\n"


def parse_note(note: str | bytes) -> SignedNote:
    """Parse an untrusted signed note; signatures are split out, not verified.

    Args:
        note: The note, as text or UTF-8 bytes.

    Returns:
        The note text (up to the last blank line, with its final newline) and its signatures.

    Raises:
        MalformedInputError: Invalid UTF-8, a control character, no blank line, a malformed
            signature line, or more than :data:`MAX_NOTE_SIGNATURES` signatures.

    """
    if isinstance(note, bytes):
        if len(note) > MAX_NOTE_BYTES:
            raise MalformedInputError(f"note is {len(note)} bytes; the limit is {MAX_NOTE_BYTES}")
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedInputError("note is not valid UTF-8") from None
    _check_text(note)
    split = note.rfind("\n\n")
    if split < 0:
        raise MalformedInputError("note has no blank line before its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block.endswith("\n"):
        raise MalformedInputError("note signatures must end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_NOTE_SIGNATURES:
        raise MalformedInputError(f"note has more than {MAX_NOTE_SIGNATURES} signatures")
    signatures: list[NoteSignature] = []
    for line in lines:
        fields = line[len(_SIG_PREFIX) :].split(" ")
        if not line.startswith(_SIG_PREFIX) or len(fields) != 2 or not is_valid_key_name(fields[0]):
            raise MalformedInputError("note signature line is malformed")
        blob = _b64_canonical(fields[1], "note signature")
        if len(blob) < 5:
            raise MalformedInputError("note signature is too short")
        signatures.append(NoteSignature(fields[0], blob[:4], blob[4:]))
    return SignedNote(text, tuple(signatures))


def verify_note(note: str | bytes, name: str, public_key: Ed25519PublicKey) -> SignedNote:
    """Verify that ``note`` carries a valid Ed25519 signature by ``name``/``public_key``.

    Steps: (1) parse; (2) select the lines whose name and key ID match the key, ignoring all
    others (c2sp.org/signed-note §Signatures); (3) every selected signature must verify.

    Args:
        note: Untrusted note, text or UTF-8 bytes.
        name: The trusted key name.
        public_key: The trusted Ed25519 public key.

    Returns:
        The parsed note, whose text may now be trusted.

    Raises:
        VerificationError: ``malformed_note``, ``missing_signature`` or ``bad_signature``.

    """
    # (1) Parse.
    try:
        parsed = parse_note(note)
    except MalformedInputError as exc:
        raise VerificationError("malformed_note", exc.message) from None
    # (2) Select the signatures of the expected key.
    key_id = note_key_id(name, public_key)
    mine = [sig for sig in parsed.signatures if sig.name == name and sig.key_id == key_id]
    if not mine:
        raise VerificationError("missing_signature", f"note has no signature by key {name!r}")
    # (3) Verify each of them: one bad signature by a known key rejects the note.
    message = parsed.text.encode("utf-8")
    for sig in mine:
        try:
            public_key.verify(sig.signature, message)
        except InvalidSignature:
            raise VerificationError("bad_signature", f"signature by key {name!r} does not verify") from None
    return parsed


def build_checkpoint(origin: str, size: int, root: bytes) -> str:
    r"""Return the checkpoint note text ``<origin>\n<size>\n<base64 root>\n`` (c2sp.org/tlog-checkpoint).

    Args:
        origin: Non-empty, no control character (openexec-mcp: ``server_id``).
        size: Tree size, ``0 <= size <= MAX_TREE_SIZE``.
        root: The 32-byte root hash.

    Raises:
        ValueError: An argument breaks the rules above.

    """
    if not origin or _CONTROL.search(origin) or "\n" in origin:
        raise ValueError("checkpoint origin must be a non-empty line")
    if isinstance(size, bool) or not 0 <= size <= MAX_TREE_SIZE:
        raise ValueError(f"checkpoint size must be in 0..{MAX_TREE_SIZE}")
    if len(root) != HASH_SIZE:
        raise ValueError(f"checkpoint root must be {HASH_SIZE} bytes")
    return f"{origin}\n{size}\n{b64encode(root)}\n"


def sign_checkpoint(origin: str, size: int, root: bytes, private_key: Ed25519PrivateKey) -> str:
    """Return the checkpoint signed by ``private_key`` under key name ``origin`` (SPEC §10).

    Raises:
        ValueError: See :func:`build_checkpoint`; also when ``origin`` is not a valid key name.

    """
    return sign_note(build_checkpoint(origin, size, root), origin, private_key)


def _parse_body(text: str, signatures: tuple[NoteSignature, ...]) -> Checkpoint:
    lines = text.split("\n")
    if len(lines) != 4:
        raise MalformedInputError("checkpoint must have exactly origin, size and root lines")
    origin, size_text, root_text = lines[:3]
    if not origin:
        raise MalformedInputError("checkpoint origin is empty")
    if not _DECIMAL.match(size_text) or int(size_text) > MAX_TREE_SIZE:
        raise MalformedInputError("checkpoint size is not a decimal in range without leading zeros")
    root = _b64_canonical(root_text, "checkpoint root")
    if len(root) != HASH_SIZE:
        raise MalformedInputError(f"checkpoint root must be {HASH_SIZE} bytes, got {len(root)}")
    return Checkpoint(origin, int(size_text), root, signatures)


def parse_checkpoint(note: str | bytes) -> Checkpoint:
    """Parse an untrusted checkpoint without verifying it (for display; trust needs :func:`verify_checkpoint`).

    Raises:
        MalformedInputError: The note or its checkpoint body is malformed.

    """
    parsed = parse_note(note)
    return _parse_body(parsed.text, parsed.signatures)


def verify_checkpoint(
    note: str | bytes, origin: str, public_key: Ed25519PublicKey, *, key_name: str | None = None
) -> Checkpoint:
    """Verify a checkpoint signed by the log key and return it.

    Steps: (1) verify the note signature (the text is not read before that); (2) parse the
    checkpoint body; (3) the origin must be the expected one.

    Args:
        note: Untrusted signed note, text or UTF-8 bytes.
        origin: The expected origin (openexec-mcp: ``server_id``).
        public_key: The log's trusted Ed25519 key.
        key_name: The key name, when it differs from the origin (default: ``origin``).

    Raises:
        VerificationError: ``malformed_note``, ``missing_signature``, ``bad_signature``,
            ``malformed_checkpoint`` or ``origin_mismatch``.

    """
    # (1) Signature first.
    verified = verify_note(note, origin if key_name is None else key_name, public_key)
    # (2) Body.
    try:
        checkpoint = _parse_body(verified.text, verified.signatures)
    except MalformedInputError as exc:
        raise VerificationError("malformed_checkpoint", exc.message) from None
    # (3) Origin.
    if checkpoint.origin != origin:
        raise VerificationError("origin_mismatch", "checkpoint is for another log")
    return checkpoint
