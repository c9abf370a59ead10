"""Receipt, proof and ledger checks, and operator work on the ledger (SPEC §7, §8, §14).

:data:`VerificationReason` is the closed set of ``reason`` tokens a verification failure carries.
Import these from :mod:`openexec_mcp.errors`.
"""

from __future__ import annotations

from typing import Literal

from openexec_mcp.errors.base import OpenExecError

__all__ = ["ResolutionRefusedError", "VerificationError", "VerificationReason"]


VerificationReason = Literal[
    # receipts (SPEC §7)
    "malformed",
    "wrong_payload_type",
    "unknown_key",
    "bad_signature",
    "bad_body",
    "not_canonical",
    # the ledger's chain and tree
    "seq_mismatch",
    "log_mismatch",
    "exec_id_mismatch",
    "broken_chain",
    "broken_prev",
    "gap",
    "hash_mismatch",
    "tree_mismatch",
    "size_mismatch",
    "checkpoint_ahead",
    "inconsistent_checkpoint",
    # Merkle proofs (RFC 9162) and proof texts (C2SP tlog-proof)
    "malformed_hash",
    "index_out_of_range",
    "wrong_proof_length",
    "root_mismatch",
    "size_regression",
    "empty_tree",
    "malformed_proof",
    "index_mismatch",
    # checkpoints and signed notes (C2SP tlog-checkpoint, signed-note)
    "malformed_note",
    "missing_signature",
    "malformed_checkpoint",
    "origin_mismatch",
    # witnesses and evidence bundles (SPEC §14, C2SP tlog-cosignature)
    "bad_cosignature",
    "quorum_not_met",
    "malformed_bundle",
    "untrusted_server_key",
    # POST /receipts/verify only (SPEC §8)
    "not_in_ledger",
    "unknown_exec_id",
    "receipt_mismatch",
    # a result envelope whose result its receipt does not cover (SPEC §6, §7); also POST /receipts/verify
    "result_mismatch",
]
"""Every ``reason`` a verification failure may carry: stable tokens, part of the wire contract
(``POST /receipts/verify``, ``receipt verify``, ``ledger verify``). Pinned by a test."""


class VerificationError(OpenExecError):
    """A receipt, proof or ledger failed verification.

    Attributes:
        reason: A :data:`VerificationReason`: which check failed (e.g. ``bad_signature``).
        seq: The ledger index concerned, when known.
    """

    code = "verification_failed"
    http_status = 422

    def __init__(self, reason: VerificationReason, message: str, *, seq: int | None = None) -> None:
        super().__init__(message)
        self.reason: VerificationReason = reason
        self.seq = seq


class ResolutionRefusedError(OpenExecError):
    """``ledger resolve`` refused: the call is unknown, not ``indeterminate`` (any more), or may not be re-run."""

    code = "resolution_refused"
    http_status = 409
