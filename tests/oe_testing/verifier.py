"""An independent receipt verifier, written from SPEC.md §2, §3 and §7 alone.

It deliberately imports nothing from ``openexec_mcp``: the end-to-end tests use it to check what
the server publishes (``GET /keys``, ``openexec-mcp keys public``) against what it signs, the way
an outside auditor would. Any failure raises :class:`ReceiptInvalid`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

RECEIPT_PAYLOAD_TYPE = "application/vnd.openexec.receipt+json"

# SPEC §7, receipt body fields of version 1.
RECEIPT_BODY_FIELDS = frozenset(
    {
        "v",
        "exec_id",
        "seq",
        "prev",
        "log_id",
        "tenant_id",
        "action",
        "action_hash",
        "nonce",
        "run_id",
        "status",
        "error_code",
        "approval",
        "result_hash",
        "original_exec_id",
        "policy_hash",
        "started_at",
        "finished_at",
        "server",
    }
)

# SPEC v2 §11: nonce_source on every new receipt, upstream on upstream calls; older receipts lack both.
OPTIONAL_BODY_FIELDS = frozenset({"nonce_source", "upstream"})

# SPEC §7: RFC 3339 UTC with millisecond precision.
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ReceiptInvalid(Exception):
    """The receipt does not verify; ``reason`` says which check failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    type_bytes = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(body), body)


def receipt_hash(envelope: dict[str, Any]) -> str:
    """SPEC §7: RFC 6962 leaf hash of the JCS bytes of the DSSE envelope."""
    return hashlib.sha256(b"\x00" + rfc8785.dumps(envelope)).hexdigest()


def action_hash(action: str, payload: dict[str, Any], nonce: str) -> str:
    """SPEC §3: SHA-256 of the JCS bytes of the action request."""
    return hashlib.sha256(rfc8785.dumps({"action": action, "payload": payload, "nonce": nonce})).hexdigest()


def result_hash(result: Any) -> str:
    """SPEC §7: SHA-256 of the JCS bytes of the result."""
    return hashlib.sha256(rfc8785.dumps(result)).hexdigest()


def public_keys_from_document(document: dict[str, Any]) -> dict[str, Ed25519PublicKey]:
    """Read the ``GET /keys`` document; check each ``kid`` is derived from its key (SPEC §7)."""
    keys: dict[str, Ed25519PublicKey] = {}
    for entry in document["keys"]:
        if entry["alg"] != "Ed25519":
            raise ReceiptInvalid("published key is not Ed25519")
        raw = base64.b64decode(entry["public_key"], validate=True)
        if len(raw) != 32:
            raise ReceiptInvalid("published key is not 32 raw bytes")
        if entry["kid"] != hashlib.sha256(raw).hexdigest()[:16]:
            raise ReceiptInvalid("published kid is not the first 16 hex of SHA-256(public key)")
        keys[entry["kid"]] = Ed25519PublicKey.from_public_bytes(raw)
    return keys


def verify_receipt(envelope: Any, keys_document: dict[str, Any]) -> dict[str, Any]:
    """Verify a DSSE receipt with only the published keys; return the receipt body.

    Raises:
        ReceiptInvalid: Any check fails.
    """
    keys = public_keys_from_document(keys_document)
    if not isinstance(envelope, dict) or set(envelope) != {"payloadType", "payload", "signatures"}:
        raise ReceiptInvalid("not a DSSE envelope")
    if envelope["payloadType"] != RECEIPT_PAYLOAD_TYPE:
        raise ReceiptInvalid("wrong payloadType")
    try:
        payload = base64.b64decode(envelope["payload"], validate=True)
    except (binascii.Error, TypeError):
        raise ReceiptInvalid("payload is not base64") from None
    signed = pae(RECEIPT_PAYLOAD_TYPE, payload)
    verified = False
    for signature in envelope["signatures"]:
        key = keys.get(signature["keyid"])
        if key is None:
            continue
        try:
            key.verify(base64.b64decode(signature["sig"], validate=True), signed)
        except (InvalidSignature, binascii.Error):
            raise ReceiptInvalid("bad signature") from None
        verified = True
    if not verified:
        raise ReceiptInvalid("no signature by a published key")
    body = json.loads(payload)
    if rfc8785.dumps(body) != payload:
        raise ReceiptInvalid("payload is not RFC 8785 canonical")
    if set(body) - OPTIONAL_BODY_FIELDS != RECEIPT_BODY_FIELDS or body["v"] != 1:
        raise ReceiptInvalid(f"body fields differ from SPEC §7: {sorted(set(body) ^ RECEIPT_BODY_FIELDS)}")
    if body.get("nonce_source", "client") not in ("client", "server"):
        raise ReceiptInvalid("nonce_source is neither client nor server")
    if not (TIMESTAMP.match(body["started_at"]) and TIMESTAMP.match(body["finished_at"])):
        raise ReceiptInvalid("timestamps are not RFC 3339 UTC with milliseconds")
    if not HEX64.match(body["action_hash"]) or not HEX64.match(body["policy_hash"]):
        raise ReceiptInvalid("action_hash / policy_hash are not 64 lowercase hex")
    return body


def verify_envelope(envelope: dict[str, Any], keys_document: dict[str, Any]) -> dict[str, Any]:
    """Verify the receipt of a result envelope (SPEC §6), its ``receipt_hash`` and its ``result``; return the body.

    SPEC §7: ``result_hash`` is SHA-256 hex of JCS(result), or null; so the envelope's ``result``
    must hash to it, and be null when it is null.
    """
    body = verify_receipt(envelope["receipt"], keys_document)
    if envelope["receipt_hash"] != receipt_hash(envelope["receipt"]):
        raise ReceiptInvalid("receipt_hash is not SHA-256(0x00 || JCS(receipt))")
    if body["exec_id"] != envelope["exec_id"] or body["action"] != envelope["action"]:
        raise ReceiptInvalid("envelope and receipt body disagree")
    result = envelope.get("result")
    if body["result_hash"] is None:
        if result is not None:
            raise ReceiptInvalid("result_mismatch: the receipt covers no result, the envelope has one")
    elif result_hash(result) != body["result_hash"]:
        raise ReceiptInvalid("result_mismatch: result_hash is not SHA-256(JCS(result))")
    return body


def decode_payload(envelope: dict[str, Any]) -> dict[str, Any]:
    """Return the (unverified) receipt body of a DSSE envelope."""
    body: dict[str, Any] = json.loads(base64.b64decode(envelope["payload"]))
    return body


def tamper_payload(envelope: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``envelope`` whose decoded payload differs in exactly one byte.

    The flipped byte sits inside the ``nonce`` value, so the payload stays canonical JSON with the
    same fields: only the signature can catch the change.
    """
    payload = bytearray(base64.b64decode(envelope["payload"]))
    marker = payload.index(b'"nonce":"') + len(b'"nonce":"')
    payload[marker] = ord("Z") if payload[marker] != ord("Z") else ord("Y")
    return {**envelope, "payload": base64.b64encode(bytes(payload)).decode()}


def swap_signatures(envelope: dict[str, Any], donor: dict[str, Any]) -> dict[str, Any]:
    """Return ``envelope`` carrying the signatures of another (valid) receipt."""
    return {**envelope, "signatures": donor["signatures"]}
