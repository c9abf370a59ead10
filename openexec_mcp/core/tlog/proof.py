"""Offline inclusion proofs in the C2SP ``tlog-proof`` text format (SPEC §7).

c2sp.org/tlog-proof lays a proof out as newline-terminated lines::

    c2sp.org/tlog-proof@v1
    extra <base64 opaque data>          (optional, unauthenticated)
    index <0-based leaf index, ASCII decimal, no leading zeros>
    <base64 32-byte hash>               (zero or more: the RFC 6962 audit path, leaf side first)
                                        (an empty line)
    <the checkpoint signed note, verbatim>

For openexec-mcp the leaf is a receipt: its leaf hash is the receipt_hash and its index the
receipt's ``seq``. :func:`verify_inclusion_proof` checks the whole chain offline against the
server's public key.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from openexec_mcp.core.encoding import b64decode_strict, b64encode
from openexec_mcp.core.tlog.checkpoint import MAX_NOTE_BYTES, Checkpoint, parse_checkpoint, verify_checkpoint
from openexec_mcp.core.tlog.merkle import HASH_SIZE, MAX_PROOF_LENGTH, MAX_TREE_SIZE, verify_inclusion
from openexec_mcp.errors import MalformedInputError, VerificationError

__all__ = [
    "TLOG_PROOF_HEADER",
    "InclusionProof",
    "format_inclusion_proof",
    "parse_inclusion_proof",
    "verify_inclusion_proof",
]

TLOG_PROOF_HEADER: Final = "c2sp.org/tlog-proof@v1"
"""The first line of every proof."""

_INDEX: Final = re.compile(r"\Aindex (0|[1-9][0-9]{0,18})\Z")


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """A parsed, not yet verified, ``tlog-proof``.

    Attributes:
        index: 0-based leaf index (the receipt's ``seq``).
        hashes: Audit path, 32-byte hashes from the leaf's sibling upwards.
        checkpoint: The checkpoint signed note, verbatim text.
        extra: The opaque ``extra`` bytes, or None when the line is absent. Unauthenticated.

    """

    index: int
    hashes: tuple[bytes, ...]
    checkpoint: str
    extra: bytes | None = None


def format_inclusion_proof(
    index: int, proof_hashes: Sequence[bytes], checkpoint_note: str, *, extra: bytes | None = None
) -> str:
    """Return the ``tlog-proof`` text for one leaf (c2sp.org/tlog-proof §Format).

    Args:
        index: 0-based leaf index, ``0 <= index < MAX_TREE_SIZE``.
        proof_hashes: The audit path (32-byte hashes), as from
            :func:`~openexec_mcp.core.tlog.merkle.inclusion_proof`.
        checkpoint_note: The signed checkpoint covering the leaf, ending with a newline.
        extra: Optional opaque data for the ``extra`` line.

    Raises:
        ValueError: An argument is out of range or has the wrong shape.

    """
    if isinstance(index, bool) or not 0 <= index < MAX_TREE_SIZE:
        raise ValueError(f"index must be in 0..{MAX_TREE_SIZE - 1}")
    if len(proof_hashes) > MAX_PROOF_LENGTH or any(len(h) != HASH_SIZE for h in proof_hashes):
        raise ValueError(f"proof must be at most {MAX_PROOF_LENGTH} hashes of {HASH_SIZE} bytes")
    if not checkpoint_note.endswith("\n"):
        raise ValueError("checkpoint note must end with a newline")
    lines = [TLOG_PROOF_HEADER]
    if extra is not None:
        lines.append(f"extra {b64encode(extra)}")
    lines.append(f"index {index}")
    lines.extend(b64encode(h) for h in proof_hashes)
    return "\n".join(lines) + "\n\n" + checkpoint_note


def _b64_canonical(text: str, what: str) -> bytes:
    value = b64decode_strict(text)
    if b64encode(value) != text:
        raise MalformedInputError(f"{what} is not canonical standard base64")
    return value


def parse_inclusion_proof(text: str | bytes) -> InclusionProof:
    """Parse an untrusted ``tlog-proof`` strictly; nothing is verified.

    Args:
        text: The proof, as text or UTF-8 bytes.

    Raises:
        MalformedInputError: A missing or wrong header, a malformed ``extra`` or ``index`` line,
            a hash that is not canonical base64 of 32 bytes, more than :data:`MAX_PROOF_LENGTH`
            hashes, or a malformed checkpoint.

    """
    # The checkpoint is bounded by MAX_NOTE_BYTES; the rest by MAX_PROOF_LENGTH lines.
    if len(text) > MAX_NOTE_BYTES + 8192:
        raise MalformedInputError(f"proof is {len(text)} long; the limit is {MAX_NOTE_BYTES + 8192}")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedInputError("proof is not valid UTF-8") from None
    head, sep, checkpoint = text.partition("\n\n")
    if not sep:
        raise MalformedInputError("proof has no blank line before its checkpoint")
    lines = head.split("\n")
    if lines[0] != TLOG_PROOF_HEADER:
        raise MalformedInputError(f"proof must start with {TLOG_PROOF_HEADER!r}")
    position = 1
    extra: bytes | None = None
    if len(lines) > 1 and lines[1].startswith("extra "):
        extra = _b64_canonical(lines[1][len("extra ") :], "proof extra data")
        position = 2
    match = _INDEX.match(lines[position]) if len(lines) > position else None
    if match is None:
        raise MalformedInputError("proof index line must be 'index <decimal without leading zeros>'")
    index = int(match.group(1))
    if index >= MAX_TREE_SIZE:
        raise MalformedInputError("proof index is out of range")
    hash_lines = lines[position + 1 :]
    if len(hash_lines) > MAX_PROOF_LENGTH:
        raise MalformedInputError(f"proof has more than {MAX_PROOF_LENGTH} hashes")
    hashes = tuple(_b64_canonical(line, "proof hash") for line in hash_lines)
    if any(len(h) != HASH_SIZE for h in hashes):
        raise MalformedInputError(f"proof hashes must be {HASH_SIZE} bytes")
    parse_checkpoint(checkpoint)  # shape only; trust comes from verify_inclusion_proof
    return InclusionProof(index, hashes, checkpoint, extra)


def verify_inclusion_proof(
    text: str | bytes,
    leaf_hash: bytes,
    origin: str,
    public_key: Ed25519PublicKey,
    *,
    index: int | None = None,
) -> Checkpoint:
    """Verify a ``tlog-proof`` for ``leaf_hash`` offline and return its verified checkpoint.

    Steps: (1) parse; (2) the index must be the expected one, when given; (3) verify the
    checkpoint signature and origin; (4) verify the audit path against the checkpoint root
    (RFC 9162 §2.1.3.2).

    Args:
        text: The untrusted proof.
        leaf_hash: The 32-byte leaf hash (for a receipt: the receipt_hash as bytes).
        origin: The log origin and key name (``server_id``).
        public_key: The log's trusted Ed25519 key.
        index: The expected leaf index (the receipt's ``seq``), or None to accept the proof's.

    Raises:
        VerificationError: ``malformed_proof``, ``index_mismatch``, or any reason of
            :func:`~openexec_mcp.core.tlog.checkpoint.verify_checkpoint` and
            :func:`~openexec_mcp.core.tlog.merkle.verify_inclusion`.

    """
    # (1) Parse.
    try:
        proof = parse_inclusion_proof(text)
    except MalformedInputError as exc:
        raise VerificationError("malformed_proof", exc.message, seq=index) from None
    # (2) Index binding.
    if index is not None and proof.index != index:
        raise VerificationError("index_mismatch", f"proof is for index {proof.index}", seq=index)
    # (3) Checkpoint.
    checkpoint = verify_checkpoint(proof.checkpoint, origin, public_key)
    # (4) Audit path.
    verify_inclusion(leaf_hash, proof.index, checkpoint.size, proof.hashes, checkpoint.root)
    return checkpoint
