"""RFC 8032 §7.1 Ed25519 and RFC 4231 §4 HMAC-SHA-256 vectors through the keyring's verifiers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from openexec_mcp.core.keyring import HMAC_MIN_SECRET_BYTES, KeyringEntry, load_ed25519_public_key
from openexec_mcp.errors import ApprovalBadSignatureError, ConfigError

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
RFC8032 = json.loads((VECTORS / "rfc8032" / "ed25519.json").read_text(encoding="utf-8"))["tests"]
RFC4231 = json.loads((VECTORS / "rfc4231" / "hmac_sha256.json").read_text(encoding="utf-8"))["tests"]


def test_rfc8032_section_7_1_vectors_are_all_present() -> None:
    assert [case["name"] for case in RFC8032] == ["TEST 1", "TEST 2", "TEST 3", "TEST 1024", "TEST SHA(abc)"]
    assert len(bytes.fromhex(RFC8032[3]["message"])) == 1023
    assert bytes.fromhex(RFC8032[4]["message"]) == hashlib.sha512(b"abc").digest()


@pytest.mark.parametrize("case", RFC8032, ids=[case["name"] for case in RFC8032])
def test_rfc8032_ed25519(case: dict[str, Any]) -> None:
    seed, public_key, message, signature = (
        bytes.fromhex(case[name]) for name in ("secret_key", "public_key", "message", "signature")
    )
    private_key = Ed25519PrivateKey.from_private_bytes(seed)
    assert private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) == public_key
    assert private_key.sign(message) == signature  # Ed25519 is deterministic (RFC 8032 §5.1.6)

    loaded = load_ed25519_public_key(base64.b64encode(public_key).decode())
    entry = KeyringEntry(kid="rfc8032", alg="ed25519", key=loaded, issuers=frozenset({"rfc"}))
    entry.verify_signature(message, signature)
    with pytest.raises(ApprovalBadSignatureError):
        entry.verify_signature(message + b"\x00", signature)
    with pytest.raises(ApprovalBadSignatureError):
        entry.verify_signature(message, signature[:-1] + bytes([signature[-1] ^ 0x01]))


@pytest.mark.parametrize("case", RFC4231, ids=[f"case{case['case']}" for case in RFC4231])
def test_rfc4231_hmac_sha256(case: dict[str, Any]) -> None:
    key, data, tag = (bytes.fromhex(case[name]) for name in ("key", "data", "hmac_sha256"))
    full = hmac.new(key, data, hashlib.sha256).digest()
    if len(key) < HMAC_MIN_SECRET_BYTES:
        # Cases 1-4 and 5 use 4- to 25-byte keys, which SPEC §5 refuses as approval secrets.
        assert full.startswith(tag)
        with pytest.raises(ConfigError, match="at least 32"):
            KeyringEntry(kid="rfc4231", alg="hmac-sha256", key=key, issuers=frozenset({"rfc"}))
        return
    entry = KeyringEntry(kid="rfc4231", alg="hmac-sha256", key=key, issuers=frozenset({"rfc"}))
    if "truncated_bits" in case:
        # Test Case 5 publishes only the leftmost 128 bits; SPEC §5 accepts only the full tag.
        assert len(tag) * 8 == case["truncated_bits"] and full.startswith(tag)
        with pytest.raises(ApprovalBadSignatureError, match="needs 32"):
            entry.verify_signature(data, tag)
        entry.verify_signature(data, full)
        return
    assert full == tag
    entry.verify_signature(data, tag)
    with pytest.raises(ApprovalBadSignatureError):
        entry.verify_signature(data, tag[:-1] + bytes([tag[-1] ^ 0x80]))
