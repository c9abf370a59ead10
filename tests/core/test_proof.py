"""C2SP tlog-proof: offline inclusion proofs for receipts; every tampering fails with its reason."""

from __future__ import annotations

import base64
import contextlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from openexec_mcp.core.tlog.checkpoint import build_checkpoint, sign_checkpoint, sign_note
from openexec_mcp.core.tlog.merkle import (
    MAX_PROOF_LENGTH,
    inclusion_proof,
    leaf_hash,
    root_from_leaves,
    subtree_hasher_from_leaves,
)
from openexec_mcp.core.tlog.proof import (
    TLOG_PROOF_HEADER,
    InclusionProof,
    format_inclusion_proof,
    parse_inclusion_proof,
    verify_inclusion_proof,
)
from openexec_mcp.errors import MalformedInputError, VerificationError

ORIGIN = "openexec-mcp"
KEY = Ed25519PrivateKey.generate()
PUBLIC = KEY.public_key()
LEAVES = [leaf_hash(f"receipt {i}".encode()) for i in range(11)]
HASHER = subtree_hasher_from_leaves(LEAVES)
CHECKPOINT = sign_checkpoint(ORIGIN, len(LEAVES), root_from_leaves(LEAVES), KEY)


def proof_text(index: int, checkpoint: str = CHECKPOINT, size: int = len(LEAVES), **kwargs: Any) -> str:
    return format_inclusion_proof(index, inclusion_proof(index, size, HASHER), checkpoint, **kwargs)


def failure(*args: Any, **kwargs: Any) -> VerificationError:
    with pytest.raises(VerificationError) as excinfo:
        verify_inclusion_proof(*args, **kwargs)
    return excinfo.value


def test_proof_follows_the_c2sp_layout() -> None:
    hashes = inclusion_proof(5, 11, HASHER)
    text = format_inclusion_proof(5, hashes, CHECKPOINT, extra=b"context")
    expected = [TLOG_PROOF_HEADER, "extra Y29udGV4dA==", "index 5", *(base64.b64encode(h).decode() for h in hashes)]
    assert text == "\n".join(expected) + "\n\n" + CHECKPOINT


def test_proof_round_trips_through_the_parser() -> None:
    hashes = inclusion_proof(5, 11, HASHER)
    assert parse_inclusion_proof(proof_text(5)) == InclusionProof(5, tuple(hashes), CHECKPOINT, None)
    assert parse_inclusion_proof(proof_text(5, extra=b"").encode()).extra == b""


@pytest.mark.parametrize("index", range(len(LEAVES)))
def test_every_receipt_proof_verifies_offline(index: int) -> None:
    checkpoint = verify_inclusion_proof(proof_text(index), LEAVES[index], ORIGIN, PUBLIC, index=index)
    assert (checkpoint.size, checkpoint.root) == (len(LEAVES), root_from_leaves(LEAVES))


def test_single_leaf_tree_has_an_empty_path() -> None:
    checkpoint = sign_checkpoint(ORIGIN, 1, LEAVES[0], KEY)
    text = format_inclusion_proof(0, [], checkpoint)
    assert text == f"{TLOG_PROOF_HEADER}\nindex 0\n\n{checkpoint}"
    verify_inclusion_proof(text, LEAVES[0], ORIGIN, PUBLIC, index=0)


def test_proof_for_another_receipt_is_root_mismatch() -> None:
    assert failure(proof_text(3), LEAVES[4], ORIGIN, PUBLIC).reason == "root_mismatch"


def test_proof_for_another_index_than_the_receipts_seq_is_index_mismatch() -> None:
    error = failure(proof_text(3), LEAVES[3], ORIGIN, PUBLIC, index=4)
    assert (error.reason, error.seq) == ("index_mismatch", 4)


def test_proof_under_a_checkpoint_by_another_key_is_missing_signature() -> None:
    forged = sign_checkpoint(ORIGIN, len(LEAVES), root_from_leaves(LEAVES), Ed25519PrivateKey.generate())
    assert failure(proof_text(3, forged), LEAVES[3], ORIGIN, PUBLIC).reason == "missing_signature"


def test_proof_of_another_log_is_origin_mismatch() -> None:
    other = sign_note(build_checkpoint("other-log", len(LEAVES), root_from_leaves(LEAVES)), ORIGIN, KEY)
    assert failure(proof_text(3, other), LEAVES[3], ORIGIN, PUBLIC).reason == "origin_mismatch"


def test_checkpoint_size_edited_after_signing_is_bad_signature() -> None:
    edited = CHECKPOINT.replace(f"\n{len(LEAVES)}\n", f"\n{len(LEAVES) + 1}\n", 1)
    assert failure(proof_text(3, edited), LEAVES[3], ORIGIN, PUBLIC).reason == "bad_signature"


def test_signed_checkpoint_of_another_size_does_not_cover_the_path() -> None:
    # The tamper helper re-signs with the real key: only the Merkle check can catch this.
    bigger = sign_checkpoint(ORIGIN, 12, root_from_leaves([*LEAVES, LEAVES[0]]), KEY)
    assert failure(proof_text(3, bigger), LEAVES[3], ORIGIN, PUBLIC).reason in {"wrong_proof_length", "root_mismatch"}


def test_proof_text_edited_to_another_index_fails() -> None:
    text = proof_text(3).replace("index 3\n", "index 2\n")
    assert failure(text, LEAVES[3], ORIGIN, PUBLIC).reason == "root_mismatch"


HASH = base64.b64encode(LEAVES[0]).decode()
MALFORMED = {
    "wrong-header": f"c2sp.org/tlog-proof@v2\nindex 0\n\n{CHECKPOINT}",
    "no-blank-line": f"{TLOG_PROOF_HEADER}\nindex 0\n{CHECKPOINT}",
    "missing-index": f"{TLOG_PROOF_HEADER}\n{HASH}\n\n{CHECKPOINT}",
    "index-not-a-number": f"{TLOG_PROOF_HEADER}\nindex notanumber\n\n{CHECKPOINT}",
    "negative-index": f"{TLOG_PROOF_HEADER}\nindex -5\n\n{CHECKPOINT}",
    "leading-zero-index": f"{TLOG_PROOF_HEADER}\nindex 03\n\n{CHECKPOINT}",
    "index-too-large": f"{TLOG_PROOF_HEADER}\nindex {2**63 - 1}\n\n{CHECKPOINT}",
    "extra-after-index": f"{TLOG_PROOF_HEADER}\nindex 0\nextra AAAA\n\n{CHECKPOINT}",
    "extra-not-base64": f"{TLOG_PROOF_HEADER}\nextra !!notbase64!!\nindex 0\n\n{CHECKPOINT}",
    "hash-not-base64": f"{TLOG_PROOF_HEADER}\nindex 0\n!!notbase64!!\n\n{CHECKPOINT}",
    "hash-too-long": f"{TLOG_PROOF_HEADER}\nindex 0\n{base64.b64encode(bytes(64)).decode()}\n\n{CHECKPOINT}",
    "hash-unpadded": f"{TLOG_PROOF_HEADER}\nindex 0\n{HASH.rstrip('=')}\n\n{CHECKPOINT}",
    "too-many-hashes": f"{TLOG_PROOF_HEADER}\nindex 0\n" + f"{HASH}\n" * (MAX_PROOF_LENGTH + 1) + f"\n{CHECKPOINT}",
    "bad-checkpoint": f"{TLOG_PROOF_HEADER}\nindex 0\n\ncheckpoint\n",
    "not-utf8": b"\xff" + f"{TLOG_PROOF_HEADER}\nindex 0\n\n{CHECKPOINT}".encode(),
}


@pytest.mark.parametrize("text", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_proof_is_refused(text: str | bytes) -> None:
    with pytest.raises(MalformedInputError):
        parse_inclusion_proof(text)
    assert failure(text, LEAVES[0], ORIGIN, PUBLIC).reason == "malformed_proof"


def test_oversized_proof_is_refused_before_parsing() -> None:
    with pytest.raises(MalformedInputError, match="limit"):
        parse_inclusion_proof("x" * (2 << 20))


@pytest.mark.parametrize(
    ("index", "hashes", "checkpoint"),
    [(-1, [], CHECKPOINT), (2**63 - 1, [], CHECKPOINT), (0, [b"short"], CHECKPOINT), (0, [], CHECKPOINT.rstrip())],
    ids=["negative-index", "index-too-large", "short-hash", "unterminated-checkpoint"],
)
def test_formatting_refuses_bad_arguments(index: int, hashes: list[bytes], checkpoint: str) -> None:
    with pytest.raises(ValueError, match="must"):
        format_inclusion_proof(index, hashes, checkpoint)


@settings(deadline=None)
@given(index=st.integers(0, len(LEAVES) - 1), position=st.integers(min_value=0), bit=st.integers(0, 7))
def test_any_flipped_bit_in_a_proof_fails(index: int, position: int, bit: int) -> None:
    text = bytearray(proof_text(index).encode())
    text[position % len(text)] ^= 1 << bit
    reason = failure(bytes(text), LEAVES[index], ORIGIN, PUBLIC, index=index).reason
    assert reason in {
        "malformed_proof",
        "index_mismatch",
        "missing_signature",
        "bad_signature",
        "origin_mismatch",
        "root_mismatch",
        "wrong_proof_length",
    }


@given(st.one_of(st.text(), st.binary()))
def test_parser_refuses_arbitrary_input_only_with_malformed_input(data: str | bytes) -> None:
    with contextlib.suppress(MalformedInputError):
        parse_inclusion_proof(data)
