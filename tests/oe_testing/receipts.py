"""Receipts for tests: a test server key, a SPEC §7 receipt factory, and decoding helpers.

``body_of`` and ``body_of_receipt`` only decode; they check no signature. Tests that must check one
use ``openexec_mcp.core.receipt.verify_receipt`` or the independent ``oe_testing.verifier``.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from mcp_types import CallToolResult

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


def envelope_of(result: CallToolResult) -> dict[str, Any]:
    """The SPEC §6 result envelope an MCP ``tools/call`` returned as its structured content.

    Raises ``AssertionError`` when the result has no structured content object.
    """
    envelope = result.structured_content
    assert isinstance(envelope, dict), result
    return envelope


def body_of_receipt(receipt: Mapping[str, Any]) -> dict[str, Any]:
    """The receipt body (SPEC §7) a DSSE envelope carries: its base64 ``payload``, parsed as JSON."""
    body: dict[str, Any] = json.loads(base64.b64decode(receipt["payload"]))
    return body


def body_of(envelope: Mapping[str, Any]) -> dict[str, Any]:
    """The receipt body (SPEC §7) of a result envelope (SPEC §6): ``envelope["receipt"]``, decoded."""
    return body_of_receipt(envelope["receipt"])
