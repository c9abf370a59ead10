r"""Witness cosignatures (C2SP ``tlog-cosignature``) and the ``tlog-witness`` request format (SPEC §14).

A cosignature is a signed-note signature line on a checkpoint::

    — <witness name> base64(key ID || u64 big-endian timestamp || 64-byte Ed25519 signature)

with ``key ID = SHA-256(name || 0x0A || 0x04 || 32-byte public key)[:4]``. The signed message is
``"cosignature/v1\n" + "time <timestamp>\n" + <checkpoint note text>`` (the text includes its final
newline, never the signature lines). The timestamp is POSIX seconds, never zero here.

The ``add-checkpoint`` request body is ``old <size>\n``, zero to 63 base64 consistency-proof
hashes one a line, an empty line, then the checkpoint signed note.

Pure functions, no I/O. ``parse_*`` raise :class:`~openexec_mcp.errors.MalformedInputError`;
``verify_*`` raise :class:`~openexec_mcp.errors.VerificationError` with ``reason``
``malformed_note``, ``bad_cosignature`` or ``quorum_not_met``.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from openexec_mcp.core.encoding import b64decode_strict, b64encode
from openexec_mcp.core.tlog.checkpoint import is_valid_key_name, parse_note
from openexec_mcp.core.tlog.merkle import HASH_SIZE, MAX_TREE_SIZE
from openexec_mcp.errors import MalformedInputError, VerificationError

__all__ = [
    "COSIGNATURE_TYPE",
    "MAX_ADD_CHECKPOINT_PROOF",
    "AddCheckpoint",
    "CheckpointBody",
    "WitnessKey",
    "cosignature_key_id",
    "cosigned_message",
    "format_add_checkpoint",
    "parse_add_checkpoint",
    "parse_checkpoint_body",
    "parse_witness_key",
    "sign_cosignature",
    "verify_cosignatures",
    "verify_quorum",
    "witness_vkey",
]

COSIGNATURE_TYPE: Final = 0x04
"""The signed-note signature type of timestamped Ed25519 cosignatures."""

MAX_ADD_CHECKPOINT_PROOF: Final = 63
"""Most consistency proof lines a client may send (c2sp.org/tlog-witness)."""

_OLD: Final = re.compile(r"\Aold (0|[1-9][0-9]{0,18})\Z")
_DECIMAL: Final = re.compile(r"\A(?:0|[1-9][0-9]{0,18})\Z")
_SIG_PREFIX: Final = "\u2014 "
_VKEY: Final = re.compile(r"\A[^+=\s]+\+[0-9a-fA-F]{8}\+[A-Za-z0-9+/]+=*\Z")
_MAX_TIMESTAMP: Final = 2**63 - 1


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True, slots=True)
class WitnessKey:
    """A trusted cosigner: its name and Ed25519 public key.

    Attributes:
        name: The key name of its signature lines (a schema-less URL, e.g. ``witness.example/w1``).
        public_key: Its Ed25519 public key.
    """

    name: str
    public_key: Ed25519PublicKey

    @property
    def key_id(self) -> bytes:
        """The 4-byte cosignature key ID."""
        return cosignature_key_id(self.name, self.public_key)


@dataclass(frozen=True, slots=True)
class CheckpointBody:
    """The first three lines of a checkpoint note text (extension lines are kept in ``text``).

    Attributes:
        origin: The origin line.
        size: The tree size.
        root: The 32-byte root hash.
        text: The whole note text, final newline included.
    """

    origin: str
    size: int
    root: bytes
    text: str


@dataclass(frozen=True, slots=True)
class AddCheckpoint:
    """A parsed ``add-checkpoint`` request body.

    Attributes:
        old: The size of the checkpoint the client believes the witness holds.
        proof: The consistency proof from ``old`` to the checkpoint's size, 32-byte hashes.
        note: The checkpoint signed note, verbatim.
    """

    old: int
    proof: tuple[bytes, ...]
    note: str


def cosignature_key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    """Return ``SHA-256(name || 0x0A || 0x04 || public key)[:4]`` (c2sp.org/tlog-cosignature)."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([COSIGNATURE_TYPE]) + _raw(public_key)).digest()[:4]


def witness_vkey(name: str, public_key: Ed25519PublicKey) -> str:
    """Return the signed-note verifier key ``<name>+<hex key ID>+base64(0x04 || public key)``."""
    blob = bytes([COSIGNATURE_TYPE]) + _raw(public_key)
    return f"{name}+{cosignature_key_id(name, public_key).hex()}+{b64encode(blob)}"


def parse_witness_key(text: str) -> WitnessKey:
    """Parse a trusted witness: ``NAME=BASE64_RAW_PUBLIC_KEY``, ``NAME=VKEY`` or a bare ``VKEY``.

    Args:
        text: The untrusted configuration value. A vkey must carry type ``0x04`` and its key ID
            must be the one computed from its name and key.

    Raises:
        MalformedInputError: None of the forms, a bad name, or a key that is not 32 bytes.
    """
    name, sep, key_text = text.partition("=")
    bare = _VKEY.match(text) is not None
    if bare or (sep and _VKEY.match(key_text)):
        vkey = text if bare else key_text
        sep = "" if bare else sep
        parts = vkey.split("+", 2)
        blob = b64decode_strict(parts[2])
        if len(blob) != 33 or blob[0] != COSIGNATURE_TYPE:
            raise MalformedInputError("a witness vkey must hold type 0x04 and a 32-byte Ed25519 key")
        if sep and name != parts[0]:
            raise MalformedInputError(f"the vkey names {parts[0]!r}, not {name!r}")
        name, raw = parts[0], blob[1:]
        key = WitnessKey(name, Ed25519PublicKey.from_public_bytes(raw))
        if key.key_id.hex() != parts[1].lower():
            raise MalformedInputError("the vkey's key ID does not match its name and key")
        if not is_valid_key_name(name):
            raise MalformedInputError(f"invalid witness name {name!r}")
        return key
    if not sep or not is_valid_key_name(name):
        raise MalformedInputError("a witness is NAME=KEY (base64 of the raw 32-byte Ed25519 key, or a vkey)")
    raw = b64decode_strict(key_text.strip())
    if len(raw) != 32:
        raise MalformedInputError("a witness public key is 32 bytes (base64 of the raw Ed25519 key)")
    return WitnessKey(name, Ed25519PublicKey.from_public_bytes(raw))


def cosigned_message(note_text: str, timestamp: int) -> bytes:
    r"""Return ``"cosignature/v1\ntime <timestamp>\n" + note_text`` as UTF-8 bytes."""
    return f"cosignature/v1\ntime {timestamp}\n{note_text}".encode()


def sign_cosignature(note_text: str, name: str, private_key: Ed25519PrivateKey, timestamp: int) -> str:
    r"""Return one cosignature line (ending in ``\n``) on a checkpoint note text.

    Args:
        note_text: The checkpoint text, final newline included, no signature lines.
        name: The witness key name.
        private_key: The witness key.
        timestamp: POSIX seconds, ``1 <= timestamp <= 2**63 - 1``.

    Raises:
        ValueError: ``timestamp`` out of range, or ``name`` not a valid key name.
    """
    if isinstance(timestamp, bool) or not 0 < timestamp <= _MAX_TIMESTAMP or not is_valid_key_name(name):
        raise ValueError("the timestamp must be in 1..2**63-1 and the name a valid key name")
    key_id = cosignature_key_id(name, private_key.public_key())
    signature = private_key.sign(cosigned_message(note_text, timestamp))
    return f"{_SIG_PREFIX}{name} {b64encode(key_id + struct.pack('>Q', timestamp) + signature)}\n"


def parse_checkpoint_body(text: str) -> CheckpointBody:
    """Parse the origin, size and root lines of a checkpoint note text; extension lines may follow.

    Raises:
        MalformedInputError: Fewer than three lines, an empty origin, a size with leading zeros
            or out of range, or a root that is not canonical base64 of 32 bytes.
    """
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise MalformedInputError("checkpoint must have origin, size and root lines")
    origin, size_text, root_text = lines[:3]
    if not origin:
        raise MalformedInputError("checkpoint origin is empty")
    if not _DECIMAL.match(size_text) or int(size_text) > MAX_TREE_SIZE:
        raise MalformedInputError("checkpoint size is not a decimal without leading zeros")
    root = b64decode_strict(root_text)
    if len(root) != HASH_SIZE or b64encode(root) != root_text:
        raise MalformedInputError("checkpoint root must be canonical base64 of 32 bytes")
    return CheckpointBody(origin, int(size_text), root, text)


def verify_cosignatures(note: str | bytes, witnesses: Sequence[WitnessKey]) -> dict[str, int]:
    """Return the trusted witnesses whose cosignature on ``note`` verifies, with its timestamp.

    Lines whose name and key ID do not match a trusted witness are ignored (another witness,
    the log's own signature). A line that matches one and does not verify rejects the note
    (c2sp.org/signed-note §Signatures).

    Args:
        note: The untrusted checkpoint signed note, with any number of signature lines.
        witnesses: The trusted witnesses.

    Returns:
        ``{witness name: timestamp}`` of every valid cosignature.

    Raises:
        VerificationError: ``malformed_note``, or ``bad_cosignature`` (a trusted witness's line
            that does not verify, or a zero timestamp).
    """
    try:
        parsed = parse_note(note)
    except MalformedInputError as exc:
        raise VerificationError("malformed_note", exc.message) from None
    by_id = {(key.name, key.key_id): key for key in witnesses}
    valid: dict[str, int] = {}
    for line in parsed.signatures:
        key = by_id.get((line.name, line.key_id))
        if key is None:
            continue
        if len(line.signature) != 8 + 64:
            raise VerificationError("bad_cosignature", f"cosignature by {line.name!r} is not timestamp + signature")
        timestamp = struct.unpack(">Q", line.signature[:8])[0]
        if not 0 < timestamp <= _MAX_TIMESTAMP:
            raise VerificationError("bad_cosignature", f"cosignature by {line.name!r} has an invalid timestamp")
        try:
            key.public_key.verify(line.signature[8:], cosigned_message(parsed.text, timestamp))
        except InvalidSignature:
            raise VerificationError("bad_cosignature", f"cosignature by {line.name!r} does not verify") from None
        valid[key.name] = max(timestamp, valid.get(key.name, 0))
    return valid


def verify_quorum(note: str | bytes, witnesses: Sequence[WitnessKey], quorum: int | None = None) -> dict[str, int]:
    """Require at least ``quorum`` distinct trusted witnesses to have cosigned ``note``.

    Args:
        note: The untrusted checkpoint note (its log signature is checked elsewhere).
        witnesses: The trusted witnesses.
        quorum: How many must have cosigned; ``None`` means all of them.

    Returns:
        As :func:`verify_cosignatures`.

    Raises:
        VerificationError: As :func:`verify_cosignatures`, or ``quorum_not_met``.
    """
    needed = len(witnesses) if quorum is None else quorum
    valid = verify_cosignatures(note, witnesses)
    if len(valid) < needed:
        names = ", ".join(sorted(valid)) or "none"
        raise VerificationError("quorum_not_met", f"{len(valid)} of {needed} required cosignatures ({names})")
    return valid


def format_add_checkpoint(old: int, proof: Sequence[bytes], note: str) -> bytes:
    """Return the ``add-checkpoint`` request body (c2sp.org/tlog-witness)."""
    lines = [f"old {old}", *(b64encode(value) for value in proof)]
    return ("\n".join(lines) + "\n\n" + note).encode()


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """Parse an untrusted ``add-checkpoint`` request body; nothing is verified.

    Raises:
        MalformedInputError: Not UTF-8, no ``old`` line, a proof line that is not canonical
            base64 of 32 bytes, more than 63 proof lines, or no empty line before the note.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedInputError("request is not UTF-8") from None
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise MalformedInputError("request has no empty line before the checkpoint")
    lines = head.split("\n")
    match = _OLD.match(lines[0])
    if match is None:
        raise MalformedInputError("the first line must be 'old <size>'")
    if len(lines) - 1 > MAX_ADD_CHECKPOINT_PROOF:
        raise MalformedInputError(f"more than {MAX_ADD_CHECKPOINT_PROOF} consistency proof lines")
    proof: list[bytes] = []
    for line in lines[1:]:
        value = b64decode_strict(line)
        if len(value) != HASH_SIZE or b64encode(value) != line:
            raise MalformedInputError("a proof line must be canonical base64 of a 32-byte hash")
        proof.append(value)
    return AddCheckpoint(int(match.group(1)), tuple(proof), note)


def cosignature_lines(note: str | bytes, witnesses: Mapping[str, WitnessKey] | Sequence[WitnessKey]) -> list[str]:
    r"""Return the signature lines of ``note`` that name one of ``witnesses`` (not verified), each ending ``\n``."""
    keys = list(witnesses.values()) if isinstance(witnesses, Mapping) else list(witnesses)
    ids = {(key.name, key.key_id) for key in keys}
    parsed = parse_note(note)
    return [
        f"{_SIG_PREFIX}{line.name} {b64encode(line.key_id + line.signature)}\n"
        for line in parsed.signatures
        if (line.name, line.key_id) in ids
    ]
