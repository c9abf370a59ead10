"""Receipts: DSSE envelopes signed with the server's Ed25519 key (SPEC §7).

A receipt body is the JSON object of SPEC §7; the envelope is
``{"payloadType": RECEIPT_PAYLOAD_TYPE, "payload": base64(JCS(body)),
"signatures": [{"keyid": kid, "sig": base64(Ed25519(PAE(type, JCS(body))))}]}``.
The **receipt_hash** is the RFC 6962 leaf hash of the envelope:
``SHA-256(0x00 || JCS(envelope))``, 64 lowercase hex.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

from openexec_mcp.core.canonical import canonicalize, json_object, loads_canonical, sha256_hex
from openexec_mcp.core.encoding import b64decode_strict, b64encode, pae
from openexec_mcp.core.receipt_body import (
    RECEIPT_BODY_FIELDS,
    RECEIPT_BODY_OPTIONAL_FIELDS,
    RECEIPT_STATUSES,
    ApprovalMethod,
    NonceSource,
    ReceiptApproval,
    ReceiptBody,
    ReceiptStatus,
    ReceiptUpstream,
    ServerInfo,
    has_receipt_body_fields,
)
from openexec_mcp.errors import MalformedInputError, VerificationError

__all__ = [
    "RECEIPT_BODY_FIELDS",
    "RECEIPT_BODY_OPTIONAL_FIELDS",
    "RECEIPT_PAYLOAD_TYPE",
    "RECEIPT_STATUSES",
    "ApprovalMethod",
    "NonceSource",
    "ReceiptApproval",
    "ReceiptBody",
    "ReceiptStatus",
    "ReceiptUpstream",
    "ServerInfo",
    "ServerKey",
    "SignedReceipt",
    "envelope_bytes",
    "has_receipt_body_fields",
    "kid_for_public_key",
    "parse_server_public_keys",
    "receipt_hash",
    "sign_receipt",
    "verify_envelope_result",
    "verify_receipt",
]

RECEIPT_PAYLOAD_TYPE: Final = "application/vnd.openexec.receipt+json"
# The body types live in receipt_body.py (one list of the SPEC §7 fields) and are re-exported here.


def kid_for_public_key(public_raw: bytes) -> str:
    """Return the server key id: the first 16 hex characters of SHA-256(raw 32-byte key) (SPEC §7)."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class ServerKey:
    """The server's Ed25519 signing key and its derived identifiers.

    Attributes:
        private_key: The Ed25519 private key (never leaves the server).
        public_raw: The raw 32-byte public key.
        kid: :func:`kid_for_public_key` of ``public_raw``.
    """

    private_key: Ed25519PrivateKey
    public_raw: bytes
    kid: str

    @classmethod
    def from_private_key(cls, private_key: Ed25519PrivateKey) -> ServerKey:
        """Derive ``public_raw`` and ``kid`` from an Ed25519 private key."""
        raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(private_key=private_key, public_raw=raw, kid=kid_for_public_key(raw))

    def public_key(self) -> Ed25519PublicKey:
        """Return the public key object."""
        return self.private_key.public_key()


@dataclass(frozen=True, slots=True)
class SignedReceipt:
    """A signed receipt as stored in the ledger.

    Attributes:
        body: The receipt body that was signed.
        envelope: The DSSE envelope (a JSON object).
        canonical: ``JCS(envelope)``, the exact bytes the ledger stores and hashes.
        receipt_hash: 64 lowercase hex, ``SHA-256(0x00 || canonical)``.
    """

    body: Mapping[str, Any]
    envelope: dict[str, Any]
    canonical: bytes
    receipt_hash: str


def receipt_hash(envelope: Mapping[str, Any]) -> str:
    """Return the receipt_hash of a DSSE envelope: RFC 6962 leaf hash of its JCS bytes, hex.

    Raises:
        MalformedInputError: ``envelope`` is not canonicalizable JSON.
    """
    return hashlib.sha256(b"\x00" + canonicalize(dict(envelope))).hexdigest()


def sign_receipt(body: ReceiptBody | Mapping[str, Any], key: ServerKey) -> SignedReceipt:
    """Sign a receipt body into a DSSE envelope (SPEC §7).

    Args:
        body: The receipt body (trusted: built by the gate), preferably typed. A mapping must have
            the fields of SPEC §7 (checked, so a programming error never yields a malformed
            receipt) and is signed as it is.
        key: The server key.

    Returns:
        The signed receipt with its canonical bytes and receipt_hash; ``body`` is its JSON object.

    Raises:
        ValueError: ``body`` does not have the SPEC §7 fields or has an unknown status.
    """
    if isinstance(body, ReceiptBody):
        json_body = body.to_json()
    else:
        if not has_receipt_body_fields(body):
            difference = (RECEIPT_BODY_FIELDS ^ body.keys()) - RECEIPT_BODY_OPTIONAL_FIELDS
            raise ValueError(f"receipt body fields differ from SPEC §7: {sorted(difference)}")
        if body["status"] not in RECEIPT_STATUSES:
            raise ValueError(f"unknown receipt status {body['status']!r}")
        json_body = dict(body)
    payload = canonicalize(json_body)
    signature = key.private_key.sign(pae(RECEIPT_PAYLOAD_TYPE, payload))
    envelope: dict[str, Any] = {
        "payloadType": RECEIPT_PAYLOAD_TYPE,
        "payload": b64encode(payload),
        "signatures": [{"keyid": key.kid, "sig": b64encode(signature)}],
    }
    canonical = envelope_bytes(envelope["payload"], key.kid, envelope["signatures"][0]["sig"])
    return SignedReceipt(json_body, envelope, canonical, hashlib.sha256(b"\x00" + canonical).hexdigest())


def envelope_bytes(payload_b64: str, keyid: str, sig_b64: str) -> bytes:
    """Return JCS of a one-signature receipt envelope without a second canonicalization pass.

    RFC 8785 orders the members ``payload``, ``payloadType``, ``signatures`` and ``keyid``,
    ``sig``, and escapes only the quote, the backslash and control characters in strings; base64 has none of
    them, nor has the payload type. A ``keyid`` that has one goes through :func:`canonicalize`.
    """
    if any(ch in '"\\' or ch < " " for ch in keyid):
        return canonicalize(
            {
                "payloadType": RECEIPT_PAYLOAD_TYPE,
                "payload": payload_b64,
                "signatures": [{"keyid": keyid, "sig": sig_b64}],
            }
        )
    return (
        f'{{"payload":"{payload_b64}","payloadType":"{RECEIPT_PAYLOAD_TYPE}",'
        f'"signatures":[{{"keyid":"{keyid}","sig":"{sig_b64}"}}]}}'
    ).encode()


def verify_receipt(envelope: Any, public_keys: Mapping[str, Ed25519PublicKey]) -> dict[str, Any]:
    """Verify a DSSE receipt envelope offline and return its body.

    Steps, first failure wins:
      1. the envelope is an object with ``payloadType``, ``payload`` and ``signatures``;
      2. ``payloadType`` is :data:`RECEIPT_PAYLOAD_TYPE`;
      3. one signature's ``keyid`` names a key in ``public_keys`` and its Ed25519 signature over
         ``PAE(payloadType, payload)`` verifies;
      4. the payload is a JSON object with the SPEC §7 body fields (the v2 ``nonce_source`` and
         ``upstream`` optional), ``v == 1``, and it is in canonical (RFC 8785) form.

    Args:
        envelope: The untrusted envelope (parsed JSON).
        public_keys: Trusted server public keys by ``kid``.

    Returns:
        The receipt body (a dict).

    Raises:
        VerificationError: ``reason`` is one of ``malformed``, ``wrong_payload_type``,
            ``unknown_key``, ``bad_signature``, ``bad_body``; ``seq`` is set when the body was read.
    """
    # (1): the envelope's shape.
    env = json_object(envelope)
    if env is None or set(env) != {"payloadType", "payload", "signatures"}:
        raise VerificationError("malformed", "receipt must be a DSSE envelope {payloadType, payload, signatures}")
    raw_signatures: Any = env["signatures"]
    signatures = (
        [json_object(item) for item in cast("list[Any]", raw_signatures)] if isinstance(raw_signatures, list) else []
    )
    if not signatures or not isinstance(env["payload"], str):
        raise VerificationError("malformed", "receipt envelope needs a base64 payload and a signature list")
    try:
        payload = b64decode_strict(env["payload"])
    except MalformedInputError:
        raise VerificationError("malformed", "receipt payload is not valid base64") from None
    # (2): the payload type, which is also bound into the signed bytes.
    if env["payloadType"] != RECEIPT_PAYLOAD_TYPE:
        raise VerificationError("wrong_payload_type", f"payloadType must be {RECEIPT_PAYLOAD_TYPE}")
    # (3): a signature by a trusted key.
    signed = pae(RECEIPT_PAYLOAD_TYPE, payload)
    known = False
    for entry in signatures:
        keyid, sig = (entry.get("keyid"), entry.get("sig")) if entry is not None else (None, None)
        if not isinstance(keyid, str) or not isinstance(sig, str):
            raise VerificationError("malformed", "each signature must be {keyid, sig} strings")
        public_key = public_keys.get(keyid)
        if public_key is None:
            continue
        known = True
        try:
            public_key.verify(b64decode_strict(sig), signed)
        except (InvalidSignature, MalformedInputError):
            continue
        break
    else:
        if not known:
            raise VerificationError("unknown_key", "no signature by a trusted server key")
        raise VerificationError("bad_signature", "receipt signature does not verify")
    # (4): the body.
    try:
        parsed, canonical = loads_canonical(payload)
    except MalformedInputError:
        raise VerificationError("bad_body", "receipt payload is not JSON") from None
    body = json_object(parsed)
    if body is None or not has_receipt_body_fields(body) or body.get("v") != 1:
        raise VerificationError("bad_body", "receipt body does not have the SPEC §7 v1 fields")
    seq = body["seq"] if isinstance(body["seq"], int) else None
    if not canonical:
        raise VerificationError("bad_body", "receipt payload is not RFC 8785 canonical", seq=seq)
    return body


def verify_envelope_result(result: Any, body: Mapping[str, Any]) -> None:
    """Check that a result envelope's ``result`` is the one its receipt covers (SPEC §6, §7).

    The receipt's ``result_hash`` is SHA-256 hex of the RFC 8785 bytes of the result, or ``null``
    when the call recorded none (a denial, an ``indeterminate`` call, a failure without a result):
    then the envelope's ``result`` must be ``null`` too. Call it on a verified receipt's body.

    Args:
        result: The envelope's ``result`` member (untrusted JSON; ``None`` when absent or null).
        body: The verified receipt body (:func:`verify_receipt`).

    Raises:
        VerificationError: ``result_mismatch``: the result is not the one ``result_hash``
            covers (another value, a dropped or added result, or a value RFC 8785 cannot encode).
    """
    expected = body.get("result_hash")
    seq = body["seq"] if isinstance(body.get("seq"), int) else None
    if expected is None:
        if result is not None:
            raise VerificationError("result_mismatch", "the receipt covers no result, the envelope has one", seq=seq)
        return
    try:
        actual = sha256_hex(canonicalize(result))
    except MalformedInputError:
        actual = None
    if actual != expected:
        raise VerificationError(
            "result_mismatch", "the envelope's result is not the one its receipt's result_hash covers", seq=seq
        )


def parse_server_public_keys(text: str) -> dict[str, Ed25519PublicKey]:
    """Parse trusted server public keys as an auditor holds them, keyed by ``kid``.

    Args:
        text: The ``GET /keys`` JSON document, a PEM ``PUBLIC KEY``, or base64 of the raw 32 bytes.

    Returns:
        ``{kid: public key}``; ``kid`` is recomputed from the key bytes, never taken on trust.

    Raises:
        MalformedInputError: ``text`` is none of the accepted forms.
    """
    stripped = text.strip()
    raws: list[bytes] = []
    if stripped.startswith("{"):
        try:
            document = json.loads(stripped)
            raws = [b64decode_strict(entry["public_key"]) for entry in document["keys"]]
        except (ValueError, KeyError, TypeError):
            raise MalformedInputError('keys document must be {"keys": [{"public_key": base64}]}') from None
    elif stripped.startswith("-----BEGIN"):
        try:
            key = load_pem_public_key(stripped.encode("ascii"))
        except ValueError:
            raise MalformedInputError("not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise MalformedInputError("PEM key is not Ed25519")
        raws = [key.public_bytes(Encoding.Raw, PublicFormat.Raw)]
    else:
        raws = [b64decode_strict(stripped)]
    if not raws or any(len(raw) != 32 for raw in raws):
        raise MalformedInputError("an Ed25519 public key is 32 raw bytes")
    return {kid_for_public_key(raw): Ed25519PublicKey.from_public_bytes(raw) for raw in raws}
