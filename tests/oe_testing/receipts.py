"""Real signed receipts for store and ledger tests: a test server key and a SPEC §7 receipt factory."""

from __future__ import annotations

import secrets

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from openexec_mcp.core.receipt import ServerKey, SignedReceipt, sign_receipt
from openexec_mcp.store.base import ReceiptFactory

KEY = ServerKey.from_private_key(Ed25519PrivateKey.generate())
HASH_A = "a" * 64


def receipt_factory(
    *,
    exec_id: str | None = None,
    status: str = "denied",
    tenant_id: str = "tenant-a",
    run_id: str = "run-1",
    action: str = "echo",
    nonce: str = "nonce-x",
    action_hash: str = HASH_A,
) -> ReceiptFactory:
    """A factory that signs a real SPEC §7 receipt with KEY, so hashes and links are real."""
    exec_id = exec_id or secrets.token_hex(16)

    def make(seq: int, prev: str | None) -> SignedReceipt:
        body = {
            "v": 1,
            "exec_id": exec_id,
            "seq": seq,
            "prev": prev,
            "log_id": "contract-test",
            "tenant_id": tenant_id,
            "action": action,
            "action_hash": action_hash,
            "nonce": nonce,
            "run_id": run_id,
            "status": status,
            "error_code": None if status == "executed" else "denied",
            "approval": None,
            "result_hash": None,
            "original_exec_id": None,
            "policy_hash": "0" * 64,
            "started_at": "2025-01-01T00:00:00.000Z",
            "finished_at": "2025-01-01T00:00:00.001Z",
            "server": {"name": "openexec-mcp", "version": "test"},
        }
        return sign_receipt(body, KEY)

    return make
