"""Ledger audit: the hash chain of receipts, checked entry by entry (SPEC §7).

:class:`LedgerAuditor` is fed the stored rows in ``seq`` order and checks, for each: the index is
the next one (no gap), the stored receipt_hash is the leaf hash of the stored envelope, the
envelope's signature verifies under a trusted server key, the body names this ``seq``, this
log, and as ``prev`` the receipt_hash of the entry before it. The first failure raises, naming
the ``seq``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from openexec_mcp.canonical import canonicalize
from openexec_mcp.core.receipt import verify_receipt
from openexec_mcp.errors import MalformedInputError, VerificationError

__all__ = ["LedgerAuditor"]


class LedgerAuditor:
    """Checks a ledger's hash chain incrementally.

    Args:
        public_keys: Trusted server keys by ``kid``.
        log_id: The expected ``log_id`` (the server_id), or ``None`` to accept the first entry's.
    """

    def __init__(self, public_keys: Mapping[str, Ed25519PublicKey], log_id: str | None = None) -> None:
        self._public_keys = public_keys
        self._log_id = log_id
        self.size = 0
        self.head: str | None = None

    def feed(self, seq: int, exec_id: str, stored_hash: str, envelope_text: str) -> dict[str, Any]:
        """Check the next stored entry and return its receipt body.

        Args:
            seq: The stored index.
            exec_id: The stored exec_id column.
            stored_hash: The stored receipt_hash column (64 hex).
            envelope_text: The stored envelope (its RFC 8785 text).

        Raises:
            VerificationError: ``seq`` is set; ``reason`` is ``gap``, ``hash_mismatch``,
                ``malformed``, ``not_canonical``, a :func:`verify_receipt` reason, ``seq_mismatch``, ``log_mismatch``,
                ``exec_id_mismatch`` or ``broken_chain``.
        """
        if seq != self.size:
            raise VerificationError("gap", f"expected seq {self.size}, found {seq}", seq=self.size)
        raw = envelope_text.encode("utf-8")
        if hashlib.sha256(b"\x00" + raw).hexdigest() != stored_hash:
            raise VerificationError(
                "hash_mismatch", "stored receipt_hash is not the hash of the stored receipt", seq=seq
            )
        try:
            envelope = json.loads(raw)
            canonical = canonicalize(envelope)
        except (ValueError, MalformedInputError):
            raise VerificationError("malformed", "stored receipt is not JSON", seq=seq) from None
        if canonical != raw:
            raise VerificationError("not_canonical", "stored receipt is not in RFC 8785 form", seq=seq)
        try:
            body = verify_receipt(envelope, self._public_keys)
        except VerificationError as exc:
            raise VerificationError(exc.reason, exc.message, seq=seq) from None
        if body["seq"] != seq:
            raise VerificationError("seq_mismatch", f"receipt body says seq {body['seq']}", seq=seq)
        if self._log_id is None:
            self._log_id = body["log_id"]
        if body["log_id"] != self._log_id:
            raise VerificationError("log_mismatch", "receipt belongs to another log", seq=seq)
        if body["exec_id"] != exec_id:
            raise VerificationError("exec_id_mismatch", "stored exec_id differs from the receipt's", seq=seq)
        if body["prev"] != self.head:
            raise VerificationError("broken_chain", "prev is not the receipt_hash of the entry before", seq=seq)
        self.size += 1
        self.head = stored_hash
        return body
