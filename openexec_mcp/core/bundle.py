"""Evidence bundles: receipts, their inclusion proofs and one witnessed checkpoint in one JSON file (SPEC §14).

Shape (``v`` 1)::

    {"v": 1,
     "checkpoint": "<checkpoint signed note, with the witnesses' cosignature lines>",
     "server_key": "<base64 of the server's raw 32-byte Ed25519 public key>",
     "receipts": [{"receipt": <DSSE envelope>, "inclusion_proof": ["<base64 hash>", ...], "index": <seq>}]}

:func:`verify_bundle` checks it offline, trusting only keys the auditor brings: the checkpoint
is signed by the trusted server key, cosigned by a quorum of trusted witnesses, and every receipt
is signed by the server, is leaf ``index`` (its ``seq``) of that checkpoint's tree, and keeps the
``prev`` links the proofs show. ``server_key`` is informative: it must be the trusted key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from openexec_mcp.core.encoding import b64decode_strict, b64encode
from openexec_mcp.core.evidence import verify_receipt_inclusion, verify_signed_checkpoint
from openexec_mcp.core.tlog.checkpoint import Checkpoint
from openexec_mcp.core.tlog.cosignature import WitnessKey, verify_quorum
from openexec_mcp.core.tlog.proof import format_inclusion_proof
from openexec_mcp.errors import MalformedInputError, VerificationError

__all__ = ["BUNDLE_VERSION", "BundleReport", "build_bundle", "verify_bundle"]

BUNDLE_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class BundleReport:
    """What :func:`verify_bundle` established.

    Attributes:
        checkpoint: The verified checkpoint.
        cosigners: ``{witness name: cosignature timestamp}`` of the valid cosignatures.
        receipts: The verified receipt bodies, in bundle order.
    """

    checkpoint: Checkpoint
    cosigners: dict[str, int]
    receipts: list[dict[str, Any]]


def build_bundle(
    checkpoint_note: str, server_public_raw: bytes, receipts: Sequence[tuple[Any, Sequence[bytes], int]]
) -> dict[str, Any]:
    """Return a bundle document.

    Args:
        checkpoint_note: The checkpoint, with its cosignature lines.
        server_public_raw: The server's raw 32-byte public key.
        receipts: ``(envelope, audit path, seq)`` for each receipt, the path against that checkpoint.
    """
    return {
        "v": BUNDLE_VERSION,
        "checkpoint": checkpoint_note,
        "server_key": b64encode(server_public_raw),
        "receipts": [
            {"receipt": envelope, "inclusion_proof": [b64encode(h) for h in path], "index": seq}
            for envelope, path, seq in receipts
        ],
    }


def _malformed(message: str) -> VerificationError:
    return VerificationError("malformed_bundle", message)


def verify_bundle(
    document: Any,
    public_keys: Mapping[str, Ed25519PublicKey],
    witnesses: Sequence[WitnessKey] = (),
    quorum: int | None = None,
) -> BundleReport:
    """Verify a bundle offline.

    Steps, first failure wins: (1) the shape; (2) ``server_key`` is a trusted key; (3) the
    checkpoint is signed by a trusted server key; (4) at least ``quorum`` trusted witnesses
    cosigned it (no witnesses and no quorum: skipped); (5) each receipt, as
    :func:`~openexec_mcp.core.evidence.verify_receipt_inclusion` against that checkpoint, with
    ``index`` its ``seq`` and ``log_id`` the checkpoint's origin.

    Args:
        document: The parsed JSON.
        public_keys: Trusted server keys by ``kid``.
        witnesses: Trusted witnesses.
        quorum: Cosignatures required; None: every witness given.

    Raises:
        VerificationError: ``malformed_bundle``, ``untrusted_server_key``, ``quorum_not_met``,
            ``bad_cosignature``, or a reason of the checkpoint and receipt checks (``seq`` set to
            the failing receipt's index).
    """
    # (1) Shape.
    if not isinstance(document, dict):
        raise _malformed("a bundle is a JSON object")
    bundle: dict[str, Any] = document  # pyright: ignore[reportUnknownVariableType]
    if bundle.get("v") != BUNDLE_VERSION:
        raise _malformed(f"unsupported bundle version {bundle.get('v')!r}")
    note, server_key, receipts = bundle.get("checkpoint"), bundle.get("server_key"), bundle.get("receipts")
    if not isinstance(note, str) or not isinstance(server_key, str) or not isinstance(receipts, list):
        raise _malformed("checkpoint and server_key must be strings, receipts a list")
    # (2) The bundled key is only a label: it must be one the auditor trusts.
    try:
        raw = b64decode_strict(server_key)
    except MalformedInputError:
        raise _malformed("server_key is not base64") from None
    trusted = {key.public_bytes(Encoding.Raw, PublicFormat.Raw) for key in public_keys.values()}
    if raw not in trusted:
        raise VerificationError("untrusted_server_key", "the bundle's server_key is not the trusted server key")
    # (3) The checkpoint, signed by the server.
    checkpoint = verify_signed_checkpoint(note, public_keys)
    # (4) The witnesses.
    cosigners: dict[str, int] = {}
    if witnesses or quorum:
        cosigners = verify_quorum(note, witnesses, quorum)
    # (5) Every receipt.
    bodies: list[dict[str, Any]] = []
    for position, item in enumerate(receipts):  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
        if not isinstance(item, dict):
            raise _malformed(f"receipts[{position}] is not an object")
        entry: dict[str, Any] = item  # pyright: ignore[reportUnknownVariableType]
        index, path = entry.get("index"), entry.get("inclusion_proof")
        if type(index) is not int or index < 0 or not isinstance(path, list):
            raise _malformed(f"receipts[{position}] needs an integer index and an inclusion_proof list")
        try:
            hashes = [b64decode_strict(value) if isinstance(value, str) else b"" for value in path]  # pyright: ignore[reportUnknownVariableType]
        except MalformedInputError:
            raise _malformed(f"receipts[{position}].inclusion_proof holds a value that is not base64") from None
        if any(len(value) != 32 for value in hashes):
            raise VerificationError("malformed_hash", "an inclusion proof hash is not 32 bytes", seq=index)
        proof = format_inclusion_proof(index, hashes, note)
        evidence = verify_receipt_inclusion(entry.get("receipt"), proof, public_keys)
        if evidence.checkpoint.root != checkpoint.root or evidence.checkpoint.size != checkpoint.size:
            raise VerificationError("root_mismatch", "receipt proven against another checkpoint", seq=index)
        bodies.append(evidence.body)
    return BundleReport(checkpoint, cosigners, bodies)
