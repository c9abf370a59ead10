"""Offline evidence (core/evidence.py), the canonical fast path and the auditor's fast path.

Any single changed byte of a receipt, of its proof, or of a checkpoint must make verification
fail; the fast paths must decide exactly as the general ones.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from openexec_mcp.core.audit import LedgerAuditor
from openexec_mcp.core.canonical import canonicalize, check_json_value, loads_canonical
from openexec_mcp.core.evidence import (
    verify_checkpoint_consistency,
    verify_receipt_inclusion,
    verify_signed_checkpoint,
)
from openexec_mcp.core.receipt import ServerKey, sign_receipt, verify_receipt
from openexec_mcp.core.tlog.checkpoint import sign_checkpoint
from openexec_mcp.core.tlog.merkle import (
    consistency_proof,
    inclusion_proof,
    root_from_leaves,
    subtree_hasher_from_leaves,
)
from openexec_mcp.core.tlog.proof import format_inclusion_proof
from openexec_mcp.errors import MalformedInputError, VerificationError

KEY = ServerKey.from_private_key(Ed25519PrivateKey.from_private_bytes(b"\x07" * 32))
TRUSTED = {KEY.kid: KEY.public_key()}
ORIGIN = "evidence.test/log"


def body(seq: int, prev: str | None) -> dict[str, Any]:
    return {
        "v": 1,
        "exec_id": f"{seq:032x}",
        "seq": seq,
        "prev": prev,
        "log_id": ORIGIN,
        "tenant_id": "default",
        "action": "echo",
        "action_hash": "a" * 64,
        "nonce": f"nonce-{seq:04d}",
        "run_id": "run",
        "status": "executed",
        "error_code": None,
        "approval": {"method": "auto", "approval_id": None, "kid": None, "issued_by": None, "artifact_hash": None},
        "result_hash": "b" * 64,
        "original_exec_id": None,
        "policy_hash": "c" * 64,
        "started_at": "2025-01-01T00:00:00.000Z",
        "finished_at": "2025-01-01T00:00:00.001Z",
        "server": {"name": "openexec-mcp", "version": "1"},
    }


def chain(size: int) -> list[Any]:
    receipts, prev = [], None
    for seq in range(size):
        signed = sign_receipt(body(seq, prev), KEY)
        receipts.append(signed)
        prev = signed.receipt_hash
    return receipts


RECEIPTS = chain(11)
LEAVES = [bytes.fromhex(r.receipt_hash) for r in RECEIPTS]
NOTE = sign_checkpoint(ORIGIN, 11, root_from_leaves(LEAVES), KEY.private_key)


def proof_for(seq: int) -> str:
    return format_inclusion_proof(seq, inclusion_proof(seq, 11, subtree_hasher_from_leaves(LEAVES)), NOTE)


def accepts(receipt_bytes: bytes, proof_bytes: bytes) -> bool:
    """What ``receipt verify --proof`` decides, without the CLI around it."""
    try:
        verify_receipt_inclusion(json.loads(receipt_bytes), proof_bytes, TRUSTED)
    except (ValueError, VerificationError, MalformedInputError):
        return False
    return True


def test_every_receipt_is_proven_included() -> None:
    for seq, receipt in enumerate(RECEIPTS):
        evidence = verify_receipt_inclusion(receipt.envelope, proof_for(seq), TRUSTED)
        assert (evidence.body["seq"], evidence.receipt_hash, evidence.checkpoint.size) == (
            seq,
            receipt.receipt_hash,
            11,
        )


def change_one_byte(data: bytes, position: int, replacement: int) -> bytes:
    position %= len(data)
    if data[position] == replacement:
        replacement ^= 0x01
    return data[:position] + bytes([replacement]) + data[position + 1 :]


@settings(max_examples=400, deadline=None)
@given(
    seq=st.integers(min_value=0, max_value=10),
    target=st.sampled_from(["receipt", "proof"]),
    position=st.integers(min_value=0),
    replacement=st.integers(min_value=0, max_value=255),
)
def test_any_single_changed_byte_of_a_receipt_or_its_proof_fails(
    seq: int, target: str, position: int, replacement: int
) -> None:
    receipt, proof = RECEIPTS[seq].canonical, proof_for(seq).encode()
    assert accepts(receipt, proof)
    if target == "receipt":
        receipt = change_one_byte(receipt, position, replacement)
    else:
        proof = change_one_byte(proof, position, replacement)
    assert not accepts(receipt, proof)


@settings(max_examples=300, deadline=None)
@given(position=st.integers(min_value=0), replacement=st.integers(min_value=0, max_value=255))
def test_any_single_changed_byte_of_a_checkpoint_fails(position: int, replacement: int) -> None:
    note = NOTE.encode()
    assert verify_signed_checkpoint(note, TRUSTED, origin=ORIGIN).size == 11
    with pytest.raises(VerificationError):
        verify_signed_checkpoint(change_one_byte(note, position, replacement), TRUSTED, origin=ORIGIN)


def test_a_receipt_of_another_log_is_refused_even_with_a_valid_proof() -> None:
    other = sign_receipt({**body(3, RECEIPTS[2].receipt_hash), "log_id": "elsewhere"}, KEY)
    with pytest.raises(VerificationError) as raised:
        verify_receipt_inclusion(other.envelope, proof_for(3), TRUSTED)
    assert raised.value.reason == "missing_signature"  # no checkpoint of log "elsewhere" in the proof


def test_checkpoint_consistency_holds_for_every_older_size_and_fails_for_a_rewrite() -> None:
    new = verify_signed_checkpoint(NOTE, TRUSTED)
    hasher = subtree_hasher_from_leaves(LEAVES)
    for size in range(1, 12):
        old = verify_signed_checkpoint(
            sign_checkpoint(ORIGIN, size, root_from_leaves(LEAVES[:size]), KEY.private_key), TRUSTED
        )
        verify_checkpoint_consistency(old, new, consistency_proof(size, 11, hasher))
    rewritten = [*LEAVES[:4], hashlib.sha256(b"other").digest(), *LEAVES[5:]]
    forked = verify_signed_checkpoint(
        sign_checkpoint(ORIGIN, 6, root_from_leaves(rewritten[:6]), KEY.private_key), TRUSTED
    )
    with pytest.raises(VerificationError) as raised:
        verify_checkpoint_consistency(forked, new, consistency_proof(6, 11, hasher))
    assert raised.value.reason == "root_mismatch"
    empty = verify_signed_checkpoint(sign_checkpoint(ORIGIN, 0, root_from_leaves([]), KEY.private_key), TRUSTED)
    verify_checkpoint_consistency(empty, new, [])


# -- loads_canonical: exact, whichever path decides ----------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(value=JSON)
def test_canonical_bytes_are_recognised_as_canonical(value: Any) -> None:
    try:
        text = check_json_value(value, max_depth=64, max_bytes=1 << 20)  # what the server ever hashes
    except MalformedInputError:
        return
    parsed, canonical = loads_canonical(text)
    assert canonical
    assert canonicalize(parsed) == text


@settings(max_examples=300, deadline=None)
@given(value=JSON, indent=st.sampled_from([None, 0, 1]), ascii_only=st.booleans(), sort=st.booleans())
def test_other_spellings_are_canonical_only_when_they_equal_the_rfc_8785_bytes(
    value: Any, indent: int | None, ascii_only: bool, sort: bool
) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only, sort_keys=sort).encode("utf-8", "surrogatepass")
    try:
        reference = rfc8785.dumps(json.loads(text))
    except (ValueError, rfc8785.CanonicalizationError, UnicodeError):
        reference = None
    try:
        _, canonical = loads_canonical(text)
    except MalformedInputError:
        assert reference is None
        return
    assert canonical == (reference == text)


# -- the auditor's fast path decides as the general path ------------------------------------------


def reference_reason(rows: list[tuple[int, str, str, str]]) -> tuple[int | None, str | None]:
    """The audit of SPEC §7 written plainly (rfc8785 round trip, verify_receipt), as the first audit was."""
    head: str | None = None
    for seq, exec_id, stored_hash, text in rows:
        raw = text.encode()
        if hashlib.sha256(b"\x00" + raw).hexdigest() != stored_hash:
            return seq, "hash_mismatch"
        try:
            envelope = json.loads(raw)
            if rfc8785.dumps(envelope) != raw:
                return seq, "not_canonical"
        except (ValueError, rfc8785.CanonicalizationError):
            return seq, "malformed"
        try:
            parsed = verify_receipt(envelope, TRUSTED)
        except VerificationError as exc:
            return seq, exc.reason
        if parsed["seq"] != seq:
            return seq, "seq_mismatch"
        if parsed["log_id"] != ORIGIN:
            return seq, "log_mismatch"
        if parsed["exec_id"] != exec_id:
            return seq, "exec_id_mismatch"
        if parsed["prev"] != head:
            return seq, "broken_chain"
        head = stored_hash
    return None, None


@settings(max_examples=300, deadline=None)
@given(
    seq=st.integers(min_value=0, max_value=4),
    position=st.integers(min_value=0),
    replacement=st.integers(min_value=32, max_value=126),
)
def test_the_fast_audit_path_names_the_same_seq_and_reason_as_the_plain_one(
    seq: int, position: int, replacement: int
) -> None:
    rows = [(r.body["seq"], r.body["exec_id"], r.receipt_hash, r.canonical.decode()) for r in RECEIPTS[:5]]
    text = change_one_byte(rows[seq][3].encode(), position, replacement).decode()
    rows[seq] = (
        seq,
        rows[seq][1],
        hashlib.sha256(b"\x00" + text.encode()).hexdigest(),
        text,
    )  # rehashed: deeper checks
    auditor = LedgerAuditor(TRUSTED, log_id=ORIGIN)
    try:
        for row in rows:
            auditor.feed(*row)
        found: tuple[int | None, str | None] = (None, None)
    except VerificationError as exc:
        found = (exc.seq, exc.reason)
    assert found == reference_reason(rows)


def test_the_fast_path_takes_the_general_path_for_an_unusual_but_valid_envelope() -> None:
    receipt = RECEIPTS[0]
    payload = base64.b64decode(receipt.envelope["payload"])
    unpadded = {**receipt.envelope, "payload": base64.b64encode(payload).decode().rstrip("=") or "A"}
    text = rfc8785.dumps(unpadded).decode()
    auditor = LedgerAuditor(TRUSTED, log_id=ORIGIN)
    body_seen = auditor.feed(0, receipt.body["exec_id"], hashlib.sha256(b"\x00" + text.encode()).hexdigest(), text)
    assert body_seen["seq"] == 0


@settings(max_examples=300, deadline=None)
@given(
    texts=st.lists(st.text(max_size=6), min_size=4, max_size=4),
    seq=st.integers(min_value=-2, max_value=2**54),
    approval=st.booleans(),
    spelling=st.sampled_from(["rfc8785", "ascii", "raw", "spaced"]),
)
def test_the_fast_body_parser_only_accepts_canonical_text(
    texts: list[str], seq: int, approval: bool, spelling: str
) -> None:
    from openexec_mcp.core.audit import parse_body_fast

    value = {
        **body(0, None),
        "nonce": texts[0],
        "tenant_id": texts[1],
        "run_id": texts[2],
        "seq": seq,
        "approval": {**body(0, None)["approval"], "issued_by": texts[3]} if approval else None,
    }
    try:
        text = {
            "rfc8785": lambda: rfc8785.dumps(value),
            "ascii": lambda: json.dumps(value, sort_keys=True, separators=(",", ":")).encode(),
            "raw": lambda: json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(),
            "spaced": lambda: json.dumps(value, sort_keys=True).encode(),
        }[spelling]()
    except (rfc8785.CanonicalizationError, UnicodeError):
        return
    fast = parse_body_fast(text)
    if fast is not None:
        assert loads_canonical(text) == (fast, True)
        assert fast == value
