"""The typed receipt body (SPEC §7, §11; issue 10 "the field list is written out six times")."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from openexec_mcp.core.audit import LedgerAuditor, parse_body_fast
from openexec_mcp.core.canonical import canonicalize
from openexec_mcp.core.encoding import b64encode, pae
from openexec_mcp.core.receipt import (
    RECEIPT_BODY_FIELDS,
    RECEIPT_PAYLOAD_TYPE,
    ReceiptApproval,
    ReceiptBody,
    ReceiptUpstream,
    ServerInfo,
    ServerKey,
    sign_receipt,
    verify_receipt,
)
from openexec_mcp.errors import VerificationError

KEY = ServerKey.from_private_key(Ed25519PrivateKey.generate())
TRUSTED = {KEY.kid: KEY.public_key()}


def typed(**changes: Any) -> ReceiptBody:
    base = ReceiptBody(
        exec_id="0" * 32, seq=0, prev=None, log_id="openexec-mcp", tenant_id="default", action="fs.write_file",
        action_hash="a" * 64, nonce="nonce-0001", run_id="run-1", status="executed", error_code=None,
        approval=ReceiptApproval(method="auto"), result_hash="b" * 64, original_exec_id=None,
        policy_hash="c" * 64, started_at="2026-11-21T10:00:00.000Z", finished_at="2026-11-21T10:00:00.001Z",
        server=ServerInfo("openexec-mcp", "0.2.0"),
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


def payload_of(envelope: dict[str, Any]) -> bytes:
    return base64.b64decode(envelope["payload"])


def test_typed_body_signs_every_spec_field_plus_nonce_source() -> None:
    signed = sign_receipt(typed(), KEY)
    body = verify_receipt(signed.envelope, TRUSTED)
    assert set(body) == RECEIPT_BODY_FIELDS | {"nonce_source"}
    assert body["nonce_source"] == "client" and "upstream" not in body
    assert body["approval"] == {"method": "auto", "approval_id": None, "kid": None, "issued_by": None,
                                "artifact_hash": None}  # fmt: skip
    assert ReceiptBody.from_json(body) == typed()


def test_upstream_and_server_nonce_are_signed_and_round_trip() -> None:
    upstream = ReceiptUpstream("fs", ServerInfo("secure-filesystem-server", "0.6.2"))
    body = typed(nonce_source="server", upstream=upstream)
    verified = verify_receipt(sign_receipt(body, KEY).envelope, TRUSTED)
    assert verified["upstream"] == {"name": "fs", "server": {"name": "secure-filesystem-server", "version": "0.6.2"}}
    assert ReceiptBody.from_json(verified) == body


def test_grant_approval_carries_its_use_count_and_only_grants_do() -> None:
    grant = ReceiptApproval(method="grant", approval_id="g-1", kid="gov", issued_by="clawshield",
                            artifact_hash="d" * 64, use=3)  # fmt: skip
    assert grant.to_json()["use"] == 3
    assert ReceiptApproval.from_json(grant.to_json()) == grant
    with pytest.raises(ValueError, match="use count"):
        ReceiptApproval(method="signed", use=1)


def test_at_places_a_body_in_the_ledger() -> None:
    placed = typed().at(7, "e" * 64)
    assert (placed.seq, placed.prev) == (7, "e" * 64) and placed.exec_id == typed().exec_id


@pytest.mark.parametrize(
    "changes", [{"status": "done"}, {"nonce_source": "agent"}, {"v": 2}], ids=["status", "nonce-source", "version"]
)
def test_typed_body_refuses_values_outside_the_spec(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        typed(**changes)


def test_receipt_written_before_spec_v2_without_nonce_source_still_verifies() -> None:
    legacy = typed().to_json()
    del legacy["nonce_source"]
    body = verify_receipt(sign_receipt(legacy, KEY).envelope, TRUSTED)
    assert "nonce_source" not in body and ReceiptBody.from_json(body).nonce_source is None


def test_body_with_a_field_outside_the_spec_is_bad_body_even_when_signed() -> None:
    extra = {**typed().to_json(), "comment": "signed, but not a SPEC field"}
    payload = canonicalize(extra)
    envelope = {"payloadType": RECEIPT_PAYLOAD_TYPE, "payload": b64encode(payload),
                "signatures": [{"keyid": KEY.kid, "sig": b64encode(KEY.private_key.sign(pae(RECEIPT_PAYLOAD_TYPE, payload)))}]}  # fmt: skip
    with pytest.raises(VerificationError) as raised:
        verify_receipt(envelope, TRUSTED)
    assert raised.value.reason == "bad_body"
    with pytest.raises(ValueError, match="comment"):
        sign_receipt(extra, KEY)


def test_auditor_fast_path_reads_v2_bodies_exactly_as_json_does() -> None:
    for body in (typed(), typed(nonce_source="server"), typed(status="denied", error_code="approval_required")):
        signed = sign_receipt(body, KEY)
        payload = payload_of(signed.envelope)
        assert parse_body_fast(payload) == json.loads(payload)
    auditor = LedgerAuditor(TRUSTED, log_id="openexec-mcp")
    head = None
    for seq in range(3):
        signed = sign_receipt(typed(exec_id=f"{seq:032x}", nonce_source="server").at(seq, head), KEY)
        auditor.feed(seq, f"{seq:032x}", signed.receipt_hash, signed.canonical.decode())
        head = signed.receipt_hash
    assert auditor.size == 3
