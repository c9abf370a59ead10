"""C2SP ``tlog-cosignature`` lines and ``tlog-witness`` request bodies (SPEC §14), and evidence bundles.

The signed message and key ID are pinned against a computation written out from the spec text;
parsers of untrusted bytes raise only ``MalformedInputError`` (hypothesis); every bundle check has
a test that makes it fire.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import struct
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from openexec_mcp.core.bundle import build_bundle, verify_bundle
from openexec_mcp.core.receipt import ServerKey, sign_receipt
from openexec_mcp.core.tlog.checkpoint import sign_checkpoint
from openexec_mcp.core.tlog.cosignature import (
    WitnessKey,
    cosigned_message,
    format_add_checkpoint,
    parse_add_checkpoint,
    parse_checkpoint_body,
    parse_witness_key,
    sign_cosignature,
    verify_cosignatures,
    verify_quorum,
    witness_vkey,
)
from openexec_mcp.core.tlog.merkle import EMPTY_ROOT, inclusion_proof, root_from_leaves, subtree_hasher_from_leaves
from openexec_mcp.errors import MalformedInputError, VerificationError

KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"cosigner").digest())
OTHER = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"other").digest())
NAME = "witness.example/w1"
WITNESS = WitnessKey(NAME, KEY.public_key())
TEXT = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_the_signed_message_is_the_header_the_time_line_and_the_note_text() -> None:
    # c2sp.org/tlog-cosignature, "Ed25519 signed message": the spec's own example.
    assert cosigned_message(TEXT, 1679315147) == (
        b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
        b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )


def test_a_cosignature_line_is_key_id_timestamp_and_signature_in_that_order() -> None:
    line = sign_cosignature(TEXT, NAME, KEY, 1679315147)
    assert line.startswith(f"\u2014 {NAME} ") and line.endswith("\n")
    blob = base64.b64decode(line.split(" ")[2])
    assert len(blob) == 4 + 8 + 64
    assert blob[:4] == hashlib.sha256(NAME.encode() + b"\n\x04" + raw(KEY)).digest()[:4]
    assert struct.unpack(">Q", blob[4:12]) == (1679315147,)
    KEY.public_key().verify(blob[12:], cosigned_message(TEXT, 1679315147))


def test_a_zero_timestamp_is_never_signed() -> None:
    with pytest.raises(ValueError):
        sign_cosignature(TEXT, NAME, KEY, 0)


def note_with(*lines: str) -> str:
    return TEXT + "\n" + "".join(lines)


def test_valid_cosignatures_are_counted_and_unknown_lines_ignored() -> None:
    note = note_with(sign_cosignature(TEXT, NAME, KEY, 5), sign_cosignature(TEXT, "other.example/w", OTHER, 6))
    assert verify_cosignatures(note, [WITNESS]) == {NAME: 5}
    assert verify_quorum(note, [WITNESS, WitnessKey("other.example/w", OTHER.public_key())]) == {
        NAME: 5,
        "other.example/w": 6,
    }


def test_a_trusted_witness_line_that_does_not_verify_rejects_the_note() -> None:
    good = sign_cosignature(TEXT, NAME, KEY, 5)
    blob = bytearray(base64.b64decode(good.split(" ")[2]))
    blob[11] ^= 1  # the timestamp changed: the signature no longer covers it
    bad = f"\u2014 {NAME} {base64.b64encode(bytes(blob)).decode()}\n"
    with pytest.raises(VerificationError) as failure:
        verify_cosignatures(note_with(bad), [WITNESS])
    assert failure.value.reason == "bad_cosignature"


def test_a_cosignature_of_another_checkpoint_does_not_verify_on_this_one() -> None:
    other_text = TEXT.replace("20852163", "20852164")
    with pytest.raises(VerificationError) as failure:
        verify_cosignatures(note_with(sign_cosignature(other_text, NAME, KEY, 5)), [WITNESS])
    assert failure.value.reason == "bad_cosignature"


def test_the_quorum_counts_distinct_witnesses_not_lines() -> None:
    note = note_with(sign_cosignature(TEXT, NAME, KEY, 5), sign_cosignature(TEXT, NAME, KEY, 6))
    with pytest.raises(VerificationError) as failure:
        verify_quorum(note, [WITNESS, WitnessKey("w2.example/w", OTHER.public_key())], 2)
    assert failure.value.reason == "quorum_not_met"


def test_add_checkpoint_bodies_round_trip() -> None:
    proof = [hashlib.sha256(bytes([i])).digest() for i in range(3)]
    note = note_with("\u2014 log AAAAAAA=\n")
    parsed = parse_add_checkpoint(format_add_checkpoint(20852014, proof, note))
    assert (parsed.old, list(parsed.proof), parsed.note) == (20852014, proof, note)


def test_checkpoint_bodies_may_carry_extension_lines() -> None:
    body = parse_checkpoint_body(TEXT + "extension line\n")
    assert (body.origin, body.size) == ("example.com/behind-the-sofa", 20852163)
    with pytest.raises(MalformedInputError):
        parse_checkpoint_body("origin\n012\n" + base64.b64encode(EMPTY_ROOT).decode() + "\n")


@given(st.binary(max_size=300))
def test_parsing_any_request_body_raises_only_malformed_input(body: bytes) -> None:
    with contextlib.suppress(MalformedInputError):
        parse_add_checkpoint(body)


@given(st.text(max_size=120))
def test_parsing_any_witness_key_raises_only_malformed_input(text: str) -> None:
    with contextlib.suppress(MalformedInputError):
        parse_witness_key(text)


def test_witness_keys_refuse_a_vkey_of_another_type_or_key_id() -> None:
    vkey = witness_vkey(NAME, KEY.public_key())
    name, key_id, blob = vkey.split("+")
    as_note_key = base64.b64encode(b"\x01" + base64.b64decode(blob)[1:]).decode()
    for bad in (f"{name}+{key_id}+{as_note_key}", f"{name}+00000000+{blob}", f"other={vkey}", f"{NAME}=AAAA"):
        with pytest.raises(MalformedInputError):
            parse_witness_key(bad)


# -- bundles ---------------------------------------------------------------------------------------

SERVER = ServerKey.from_private_key(Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"server").digest()))
ORIGIN = "bundle.example/log"


def receipt_body(seq: int, prev: str | None) -> dict[str, Any]:
    return {
        "v": 1,
        "exec_id": f"{seq:032x}",
        "seq": seq,
        "prev": prev,
        "log_id": ORIGIN,
        "tenant_id": "t",
        "action": "echo",
        "action_hash": "a" * 64,
        "nonce": f"n{seq}",
        "run_id": "r",
        "status": "executed",
        "error_code": None,
        "approval": None,
        "result_hash": "b" * 64,
        "original_exec_id": None,
        "policy_hash": "c" * 64,
        "started_at": "2026-01-01T00:00:00.000Z",
        "finished_at": "2026-01-01T00:00:00.001Z",
        "server": {"name": "openexec-mcp", "version": "1"},
    }


def a_bundle(size: int = 5, cosigners: tuple[tuple[str, Ed25519PrivateKey], ...] = ((NAME, KEY),)) -> dict[str, Any]:
    receipts, prev = [], None
    for seq in range(size):
        signed = sign_receipt(receipt_body(seq, prev), SERVER)
        receipts.append(signed)
        prev = signed.receipt_hash
    leaves = [bytes.fromhex(r.receipt_hash) for r in receipts]
    note = sign_checkpoint(ORIGIN, size, root_from_leaves(leaves), SERVER.private_key)
    text = note.split("\n\n")[0] + "\n"
    note += "".join(sign_cosignature(text, name, key, 1_800_000_000) for name, key in cosigners)
    hasher = subtree_hasher_from_leaves(leaves)
    items = [(r.envelope, inclusion_proof(i, size, hasher), i) for i, r in enumerate(receipts)]
    return build_bundle(note, SERVER.public_raw, items)


TRUSTED = {SERVER.kid: SERVER.public_key()}


def test_a_bundle_verifies_with_the_server_key_and_the_witness() -> None:
    report = verify_bundle(a_bundle(), TRUSTED, [WITNESS], 1)
    assert (report.checkpoint.size, list(report.cosigners), len(report.receipts)) == (5, [NAME], 5)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda b: {**b, "v": 2}, "malformed_bundle"),
        (lambda b: {**b, "receipts": "all"}, "malformed_bundle"),
        (lambda b: {**b, "server_key": base64.b64encode(raw(OTHER)).decode()}, "untrusted_server_key"),
        (lambda b: {**b, "receipts": [{**b["receipts"][1], "index": 2}]}, "index_mismatch"),
        (lambda b: {**b, "receipts": [{**b["receipts"][1], "inclusion_proof": ["AA=="]}]}, "malformed_hash"),
        (
            lambda b: {**b, "receipts": [{**b["receipts"][1], "inclusion_proof": b["receipts"][2]["inclusion_proof"]}]},
            "root_mismatch",
        ),
    ],
    ids=["version", "receipts_shape", "untrusted_server_key", "index", "short_hash", "another_leaf_path"],
)
def test_each_bundle_check_fires(change: Any, reason: str) -> None:
    with pytest.raises(VerificationError) as failure:
        verify_bundle(change(a_bundle()), TRUSTED, [WITNESS], 1)
    assert failure.value.reason == reason


def test_a_bundle_without_the_quorum_fails() -> None:
    with pytest.raises(VerificationError) as failure:
        verify_bundle(a_bundle(cosigners=()), TRUSTED, [WITNESS])
    assert failure.value.reason == "quorum_not_met"
