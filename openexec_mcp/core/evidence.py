"""Offline evidence checks for an auditor holding only the server's public key (SPEC §7, §10).

- :func:`verify_receipt_inclusion`: a receipt and its C2SP ``tlog-proof`` prove that this exact
  receipt is leaf ``seq`` of the ledger whose checkpoint the server signed.
- :func:`verify_signed_checkpoint`: a checkpoint note kept by the auditor, signed by a trusted key.
- :func:`verify_checkpoint_consistency`: a later checkpoint extends an earlier one (the ledger was
  not rewritten in between), given the RFC 9162 consistency proof.

Every input is untrusted; every function raises
:class:`~openexec_mcp.errors.VerificationError` on the first failed check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from openexec_mcp.core.canonical import json_object
from openexec_mcp.core.receipt import receipt_hash, verify_receipt
from openexec_mcp.core.tlog.checkpoint import Checkpoint, parse_checkpoint, verify_checkpoint
from openexec_mcp.core.tlog.merkle import verify_consistency
from openexec_mcp.core.tlog.proof import parse_inclusion_proof, verify_inclusion_proof
from openexec_mcp.errors import MalformedInputError, VerificationError

__all__ = [
    "ReceiptEvidence",
    "verify_checkpoint_consistency",
    "verify_receipt_inclusion",
    "verify_signed_checkpoint",
]


@dataclass(frozen=True, slots=True)
class ReceiptEvidence:
    """What :func:`verify_receipt_inclusion` established.

    Attributes:
        body: The verified receipt body.
        receipt_hash: The leaf hash recomputed from the envelope, 64 hex.
        checkpoint: The verified checkpoint whose tree holds the receipt.
    """

    body: dict[str, Any]
    receipt_hash: str
    checkpoint: Checkpoint


def _signing_keys(envelope: Any, public_keys: Mapping[str, Ed25519PublicKey]) -> list[Ed25519PublicKey]:
    # The keys named by the envelope's signatures first: the server signs receipts and checkpoints
    # with the same key.
    env = json_object(envelope) or {}
    signatures: Any = env.get("signatures")
    named: list[Any] = []
    if isinstance(signatures, list):
        named = [(json_object(entry) or {}).get("keyid") for entry in signatures]  # pyright: ignore[reportUnknownVariableType]
    ordered = [public_keys[kid] for kid in named if isinstance(kid, str) and kid in public_keys]
    return ordered + [key for key in public_keys.values() if key not in ordered]


def verify_signed_checkpoint(
    note: str | bytes, public_keys: Mapping[str, Ed25519PublicKey], *, origin: str | None = None
) -> Checkpoint:
    """Verify a checkpoint signed by one of the trusted server keys.

    Args:
        note: The untrusted signed note.
        public_keys: Trusted server keys by ``kid``.
        origin: The expected origin (``server_id``); ``None`` accepts the note's own origin line,
            which the signature then binds (the key ID covers the key name).

    Raises:
        VerificationError: As :func:`~openexec_mcp.core.tlog.checkpoint.verify_checkpoint`.
    """
    if origin is None:
        try:
            origin = parse_checkpoint(note).origin
        except MalformedInputError as exc:
            raise VerificationError("malformed_note", exc.message) from None
    failure = VerificationError("missing_signature", "no checkpoint signature by a trusted key")
    for key in public_keys.values():
        try:
            return verify_checkpoint(note, origin, key)
        except VerificationError as exc:
            if exc.reason != "missing_signature":
                raise
            failure = exc
    raise failure


def verify_receipt_inclusion(
    envelope: Any, proof: str | bytes, public_keys: Mapping[str, Ed25519PublicKey]
) -> ReceiptEvidence:
    """Verify a receipt and its inclusion proof offline.

    Steps, first failure wins:
      1. the DSSE signature and body (:func:`~openexec_mcp.core.receipt.verify_receipt`);
      2. the leaf hash is recomputed from the envelope itself, never taken from the caller;
      3. the proof's checkpoint is signed by the key that signed the receipt, with origin the
         receipt's ``log_id``; the proof's index is the receipt's ``seq``; the audit path leads
         from the leaf to the checkpoint's root (:func:`~openexec_mcp.core.tlog.proof.verify_inclusion_proof`);
      4. ``prev`` where the proof shows it: ``null`` at seq 0, and for an odd ``seq`` the path's
         first hash, which is leaf ``seq - 1`` (the full chain is ``ledger verify``'s job).

    Args:
        envelope: The untrusted DSSE envelope (parsed JSON).
        proof: The untrusted ``tlog-proof`` text.
        public_keys: Trusted server keys by ``kid``.

    Raises:
        VerificationError: A reason of the steps above, or ``broken_prev``.
    """
    # (1) Signature and body.
    body = verify_receipt(envelope, public_keys)
    seq: Any = body["seq"]
    if type(seq) is not int or not isinstance(body["log_id"], str):
        raise VerificationError("bad_body", "receipt seq must be an integer and log_id a string")
    # (2) The leaf, from the envelope we hold.
    leaf = receipt_hash(envelope)
    # (3) Inclusion under a checkpoint signed by the receipt's key.
    checkpoint: Checkpoint | None = None
    for key in _signing_keys(envelope, public_keys):
        try:
            checkpoint = verify_inclusion_proof(proof, bytes.fromhex(leaf), body["log_id"], key, index=seq)
            break
        except VerificationError as exc:
            if exc.reason != "missing_signature":
                raise VerificationError(exc.reason, exc.message, seq=seq) from None
    if checkpoint is None:
        raise VerificationError("missing_signature", "the checkpoint is not signed by a trusted key", seq=seq)
    # (4) The prev link, where the proof shows the leaf before.
    path: Sequence[bytes] = parse_inclusion_proof(proof).hashes
    expected_prev = None if seq == 0 else path[0].hex() if seq % 2 == 1 else body["prev"]
    if body["prev"] != expected_prev:
        raise VerificationError("broken_prev", "prev is not the receipt_hash of the leaf before", seq=seq)
    return ReceiptEvidence(body, leaf, checkpoint)


def verify_checkpoint_consistency(old: Checkpoint, new: Checkpoint, proof: Sequence[bytes]) -> None:
    """Verify that verified checkpoint ``new`` extends verified checkpoint ``old`` (RFC 9162 §2.1.4.2).

    Every tree extends the empty one, so an ``old`` of size 0 needs no proof.

    Raises:
        VerificationError: ``origin_mismatch``, or a reason of
            :func:`~openexec_mcp.core.tlog.merkle.verify_consistency`.
    """
    if old.origin != new.origin:
        raise VerificationError("origin_mismatch", "the checkpoints are of different logs")
    if old.size == 0 and new.size >= 0 and not proof:
        return
    verify_consistency(old.size, new.size, proof, old.root, new.root)
