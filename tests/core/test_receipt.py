"""Receipt signing and offline verification (SPEC §7): every tampering must fail."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from openexec_mcp.core.audit import LedgerAuditor
from openexec_mcp.core.receipt import (
    RECEIPT_BODY_FIELDS,
    ServerKey,
    kid_for_public_key,
    parse_server_public_keys,
    receipt_hash,
    sign_receipt,
    verify_receipt,
)
from openexec_mcp.errors import MalformedInputError, VerificationError

KEY = ServerKey.from_private_key(Ed25519PrivateKey.generate())
OTHER = ServerKey.from_private_key(Ed25519PrivateKey.generate())
TRUSTED = {KEY.kid: KEY.public_key()}


def body(seq: int = 0, prev: str | None = None, **changes: Any) -> dict[str, Any]:
    base = {
        "v": 1,
        "exec_id": f"{seq:032x}",
        "seq": seq,
        "prev": prev,
        "log_id": "openexec-mcp",
        "tenant_id": "default",
        "action": "echo",
        "action_hash": "a" * 64,
        "nonce": f"nonce-{seq:04d}",
        "run_id": "run-1",
        "status": "executed",
        "error_code": None,
        "approval": {"method": "auto", "approval_id": None, "kid": None, "issued_by": None, "artifact_hash": None},
        "result_hash": "b" * 64,
        "original_exec_id": None,
        "policy_hash": "c" * 64,
        "started_at": "2026-11-21T10:00:00.000Z",
        "finished_at": "2026-11-21T10:00:00.001Z",
        "server": {"name": "openexec-mcp", "version": "0.1.0"},
    }
    return {**base, **changes}


def test_kid_is_first_16_hex_of_sha256_of_raw_public_key() -> None:
    raw = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert KEY.kid == hashlib.sha256(raw).hexdigest()[:16] == kid_for_public_key(raw)


def test_signed_receipt_verifies_and_hash_is_rfc6962_leaf_of_jcs() -> None:
    signed = sign_receipt(body(), KEY)
    assert verify_receipt(signed.envelope, TRUSTED) == body()
    expected = hashlib.sha256(b"\x00" + rfc8785.dumps(signed.envelope)).hexdigest()
    assert signed.receipt_hash == receipt_hash(signed.envelope) == expected


def test_envelope_matches_dsse_independently_computed() -> None:
    signed = sign_receipt(body(), KEY)
    payload = base64.b64decode(signed.envelope["payload"])
    ptype = b"application/vnd.openexec.receipt+json"
    pae = b"DSSEv1 %d %s %d %s" % (len(ptype), ptype, len(payload), payload)
    KEY.public_key().verify(base64.b64decode(signed.envelope["signatures"][0]["sig"]), pae)
    assert payload == rfc8785.dumps(body())


def test_body_must_have_exactly_the_spec_fields() -> None:
    with pytest.raises(ValueError, match="SPEC"):
        sign_receipt({k: v for k, v in body().items() if k != "prev"}, KEY)
    with pytest.raises(ValueError, match="SPEC"):
        sign_receipt({**body(), "extra": 1}, KEY)
    assert set(body()) == RECEIPT_BODY_FIELDS


@given(st.data())
def test_any_single_byte_change_of_the_payload_fails(data: st.DataObject) -> None:
    signed = sign_receipt(body(), KEY)
    payload = bytearray(base64.b64decode(signed.envelope["payload"]))
    index = data.draw(st.integers(min_value=0, max_value=len(payload) - 1))
    payload[index] ^= data.draw(st.integers(min_value=1, max_value=255))
    tampered = {**signed.envelope, "payload": base64.b64encode(bytes(payload)).decode()}
    with pytest.raises(VerificationError) as caught:
        verify_receipt(tampered, TRUSTED)
    assert caught.value.reason == "bad_signature"


def test_signature_swapped_from_another_receipt_fails() -> None:
    first, second = sign_receipt(body(0), KEY), sign_receipt(body(1), KEY)
    swapped = {**first.envelope, "signatures": second.envelope["signatures"]}
    with pytest.raises(VerificationError) as caught:
        verify_receipt(swapped, TRUSTED)
    assert caught.value.reason == "bad_signature"


def test_receipt_signed_by_another_key_is_unknown_key() -> None:
    with pytest.raises(VerificationError) as caught:
        verify_receipt(sign_receipt(body(), OTHER).envelope, TRUSTED)
    assert caught.value.reason == "unknown_key"


def test_forged_keyid_does_not_help_another_key() -> None:
    forged = sign_receipt(body(), OTHER).envelope
    forged["signatures"][0]["keyid"] = KEY.kid
    with pytest.raises(VerificationError) as caught:
        verify_receipt(forged, TRUSTED)
    assert caught.value.reason == "bad_signature"


def test_payload_type_is_bound() -> None:
    envelope = {**sign_receipt(body(), KEY).envelope, "payloadType": "application/json"}
    with pytest.raises(VerificationError) as caught:
        verify_receipt(envelope, TRUSTED)
    assert caught.value.reason == "wrong_payload_type"


@pytest.mark.parametrize(
    "envelope",
    [
        None,
        [],
        {},
        {"payloadType": "x"},
        {"payloadType": "x", "payload": 1, "signatures": []},
        {"payloadType": "x", "payload": "!!", "signatures": [{"keyid": "k", "sig": "s"}]},
    ],
)
def test_malformed_envelopes_are_refused_with_a_reason(envelope: Any) -> None:
    with pytest.raises(VerificationError) as caught:
        verify_receipt(envelope, TRUSTED)
    assert caught.value.reason == "malformed"


def test_non_canonical_payload_is_refused_even_if_signed() -> None:
    payload = json.dumps(body(), indent=1).encode()
    from openexec_mcp.core.encoding import pae

    sig = KEY.private_key.sign(pae("application/vnd.openexec.receipt+json", payload))
    envelope = {
        "payloadType": "application/vnd.openexec.receipt+json",
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": KEY.kid, "sig": base64.b64encode(sig).decode()}],
    }
    with pytest.raises(VerificationError) as caught:
        verify_receipt(envelope, TRUSTED)
    assert caught.value.reason == "bad_body"


def _chain(n: int) -> list[tuple[int, str, str, str]]:
    rows, prev = [], None
    for seq in range(n):
        signed = sign_receipt(body(seq, prev), KEY)
        rows.append((seq, f"{seq:032x}", signed.receipt_hash, signed.canonical.decode()))
        prev = signed.receipt_hash
    return rows


def test_auditor_accepts_a_clean_chain() -> None:
    auditor = LedgerAuditor(TRUSTED, log_id="openexec-mcp")
    for row in _chain(6):
        auditor.feed(*row)
    assert auditor.size == 6


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda rows: rows.pop(3), "gap"),
        (lambda rows: rows.__setitem__(3, (*rows[3][:2], "0" * 64, rows[3][3])), "hash_mismatch"),
        (lambda rows: rows.__setitem__(3, (rows[3][0], "f" * 32, *rows[3][2:])), "exec_id_mismatch"),
        (lambda rows: rows.__setitem__(3, (*rows[3][:2], *_resigned(body(3, None)))), "broken_chain"),
        (lambda rows: rows.__setitem__(3, (*rows[3][:2], *_resigned(body(3, rows[2][2], log_id="x")))), "log_mismatch"),
        (lambda rows: rows.__setitem__(3, (*rows[3][:2], *_resigned(body(4, rows[2][2])))), "seq_mismatch"),
    ],
)
def test_auditor_names_the_first_bad_seq(mutate: Any, reason: str) -> None:
    rows = _chain(6)
    mutate(rows)
    auditor = LedgerAuditor(TRUSTED, log_id="openexec-mcp")
    with pytest.raises(VerificationError) as caught:
        for row in rows:
            auditor.feed(*row)
    assert caught.value.reason == reason
    assert caught.value.seq == 3


def _resigned(new_body: dict[str, Any]) -> tuple[str, str]:
    signed = sign_receipt(new_body, KEY)
    return signed.receipt_hash, signed.canonical.decode()


def test_auditor_refuses_an_edited_but_rehashed_envelope() -> None:
    rows = _chain(3)
    envelope = json.loads(rows[1][3])
    payload = bytearray(base64.b64decode(envelope["payload"]))
    payload[10] ^= 1
    envelope["payload"] = base64.b64encode(bytes(payload)).decode()
    text = rfc8785.dumps(envelope).decode()
    rows[1] = (1, rows[1][1], hashlib.sha256(b"\x00" + text.encode()).hexdigest(), text)
    auditor = LedgerAuditor(TRUSTED)
    with pytest.raises(VerificationError) as caught:
        for row in rows:
            auditor.feed(*row)
    assert (caught.value.seq, caught.value.reason) == (1, "bad_signature")


def test_public_keys_parse_from_every_published_form() -> None:
    raw = KEY.public_raw
    b64 = base64.b64encode(raw).decode()
    pem = KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    document = json.dumps({"keys": [{"kid": "ignored", "alg": "Ed25519", "public_key": b64}]})
    for text in (b64, pem, document, b64.rstrip("=")):
        assert list(parse_server_public_keys(text)) == [KEY.kid]
    for bad in ("", "abc", base64.b64encode(b"x" * 31).decode(), '{"keys": 1}'):
        with pytest.raises(MalformedInputError):
            parse_server_public_keys(bad)


def test_envelope_copy_is_independent() -> None:
    signed = sign_receipt(body(), KEY)
    clone = copy.deepcopy(signed.envelope)
    clone["signatures"][0]["sig"] = "A" * 88
    assert verify_receipt(signed.envelope, TRUSTED)["seq"] == 0


@pytest.mark.parametrize("keyid", ["ed25519:abc", "k\u00e9y-\u263a", 'quo"te', "back\\slash", "new\nline", "tab\there"])
def test_the_envelope_bytes_built_directly_are_the_rfc8785_bytes(keyid: str) -> None:
    from openexec_mcp.core.canonical import canonicalize
    from openexec_mcp.core.receipt import RECEIPT_PAYLOAD_TYPE, envelope_bytes

    envelope = {
        "payloadType": RECEIPT_PAYLOAD_TYPE,
        "payload": "eyJ2IjoxfQ+/==",
        "signatures": [{"keyid": keyid, "sig": "c2lnbmF0dXJl+/=="}],
    }
    assert envelope_bytes("eyJ2IjoxfQ+/==", keyid, "c2lnbmF0dXJl+/==") == canonicalize(envelope)
