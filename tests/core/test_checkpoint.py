"""C2SP signed notes and tlog-checkpoints: public vectors, every tampering fails with its reason."""

from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from openexec_mcp.core.tlog.checkpoint import (
    MAX_NOTE_BYTES,
    MAX_NOTE_SIGNATURES,
    Checkpoint,
    build_checkpoint,
    note_key_id,
    parse_checkpoint,
    parse_note,
    sign_checkpoint,
    sign_note,
    verify_checkpoint,
    verify_note,
)
from openexec_mcp.core.tlog.merkle import EMPTY_ROOT, leaf_hash
from openexec_mcp.errors import MalformedInputError, VerificationError

VECTORS = Path(__file__).parent.parent / "vectors"
GO_NOTE: dict[str, str] = json.loads((VECTORS / "golang-mod-sumdb-note" / "note_test.json").read_text())
FORMATS: dict[str, Any] = json.loads((VECTORS / "transparency-dev-formats" / "note_test.json").read_text())
C2SP_NOTE = (VECTORS / "c2sp" / "signed-note-example.txt").read_text()
C2SP_CHECKPOINT = (VECTORS / "c2sp" / "tlog-checkpoint-example.txt").read_text()

ORIGIN = "openexec-mcp"
KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()
ROOT = leaf_hash(b"receipt 0")


def go_verifier_key(vkey: str) -> tuple[str, bytes, Ed25519PublicKey]:
    """Split Go's ``<name>+<hex key ID>+<base64(0x01 || key)>``; the base64 may itself hold ``+``."""
    name, key_id, blob = vkey.split("+", 2)
    raw = base64.b64decode(blob)
    assert raw[0] == 1  # Ed25519
    return name, bytes.fromhex(key_id), Ed25519PublicKey.from_public_bytes(raw[1:])


def go_signer_key(skey: str) -> Ed25519PrivateKey:
    raw = base64.b64decode(skey.split("+", 4)[4])
    assert raw[0] == 1
    return Ed25519PrivateKey.from_private_bytes(raw[1:])


def raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def failure(check: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(VerificationError) as excinfo:
        check(*args, **kwargs)
    return excinfo.value.reason


def signed(text: str, key: Ed25519PrivateKey = KEY, name: str = ORIGIN) -> str:
    """The tamper helper: sign any text with a real key, so the semantic check must fire."""
    return sign_note(text, name, key)


# --- golang.org/x/mod/sumdb/note vectors ---

PETER_NAME, PETER_ID, PETER = go_verifier_key(GO_NOTE["peter_vkey"])
ENOCH_NAME, ENOCH_ID, ENOCH = go_verifier_key(GO_NOTE["enoch_vkey"])
TEXT = GO_NOTE["text"]


def test_go_key_ids_are_the_c2sp_ed25519_key_ids() -> None:
    assert note_key_id(PETER_NAME, PETER) == PETER_ID == bytes.fromhex("c74f20a3")
    assert note_key_id(ENOCH_NAME, ENOCH) == ENOCH_ID == bytes.fromhex("af0cfe78")


@pytest.mark.parametrize("pair", FORMATS["keys"], ids=lambda pair: pair["vkey"].split("+")[0])
def test_transparency_dev_key_ids_and_seeds(pair: dict[str, str]) -> None:
    name, key_id, public_key = go_verifier_key(pair["vkey"])
    assert raw(go_signer_key(pair["skey"]).public_key()) == raw(public_key)
    assert note_key_id(name, public_key) == key_id


def test_signing_reproduces_the_go_signed_note_byte_for_byte() -> None:
    assert sign_note(TEXT, PETER_NAME, go_signer_key(GO_NOTE["peter_skey"])) == GO_NOTE["signed_note"]


def test_go_signed_note_verifies() -> None:
    note = verify_note(GO_NOTE["signed_note"], PETER_NAME, PETER)
    assert note.text == TEXT
    assert [(s.name, s.key_id, len(s.signature)) for s in note.signatures] == [(PETER_NAME, PETER_ID, 64)]


def test_unknown_signatures_are_ignored_and_each_known_one_verifies() -> None:
    both = TEXT + "\n" + GO_NOTE["peter_sig_line"] + GO_NOTE["enoch_sig_line"]
    assert len(verify_note(both, PETER_NAME, PETER).signatures) == 2
    assert verify_note(both.encode(), ENOCH_NAME, ENOCH).text == TEXT


def test_note_without_a_signature_by_the_key_is_missing_signature() -> None:
    note = TEXT + "\n" + GO_NOTE["enoch_sig_line"]
    assert failure(verify_note, note, PETER_NAME, PETER) == "missing_signature"


def test_go_invalid_signature_for_known_key_is_bad_signature() -> None:
    line = GO_NOTE["peter_sig_line"]
    assert failure(verify_note, TEXT + "\n" + line[:60] + "ABCD" + line[60:], PETER_NAME, PETER) == "bad_signature"


def test_same_name_other_key_is_ignored_not_trusted() -> None:
    impostor = sign_note(TEXT, PETER_NAME, OTHER_KEY)
    assert failure(verify_note, impostor, PETER_NAME, PETER) == "missing_signature"


GO_BAD_NOTES = {
    "text-only": TEXT,
    "no-signatures": TEXT + "\n",
    "unterminated-signature": TEXT + "\n" + GO_NOTE["peter_sig_line"][:-1],
    "leading-control": "\x01" + TEXT + "\n" + GO_NOTE["peter_sig_line"],
    "space-in-name": TEXT + "\n— Bad Name " + GO_NOTE["peter_sig_line"].split(" ")[2],
    "unexpected-line": TEXT + "\n" + GO_NOTE["peter_sig_line"] + "Unexpected line.\n",
    "101-signatures": TEXT + "\n" + GO_NOTE["peter_sig_line"] * (MAX_NOTE_SIGNATURES + 1),
}


@pytest.mark.parametrize("note", GO_BAD_NOTES.values(), ids=GO_BAD_NOTES.keys())
def test_go_malformed_notes_are_refused(note: str) -> None:
    with pytest.raises(MalformedInputError):
        parse_note(note)
    assert failure(verify_note, note, PETER_NAME, PETER) == "malformed_note"


def test_invalid_utf8_note_is_refused() -> None:
    note = b"\xff" + (TEXT + "\n" + GO_NOTE["peter_sig_line"]).encode()
    assert failure(verify_note, note, PETER_NAME, PETER) == "malformed_note"


# --- transparency-dev/formats: a production sum.golang.org checkpoint ---


def test_sum_golang_org_checkpoint_verifies() -> None:
    name, _, public_key = go_verifier_key(FORMATS["sumdb_vkey"])
    checkpoint = verify_checkpoint(FORMATS["sumdb_checkpoint"], FORMATS["sumdb_origin"], public_key, key_name=name)
    assert (checkpoint.origin, checkpoint.size) == ("go.sum database tree", 6476701)
    assert checkpoint.root == base64.b64decode("mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=")


def test_sum_golang_org_checkpoint_for_another_origin_is_origin_mismatch() -> None:
    name, _, public_key = go_verifier_key(FORMATS["sumdb_vkey"])
    assert (
        failure(verify_checkpoint, FORMATS["sumdb_checkpoint"], "other", public_key, key_name=name) == "origin_mismatch"
    )
    # Without key_name the key is looked up under the origin, and its signature is not there.
    assert failure(verify_checkpoint, FORMATS["sumdb_checkpoint"], FORMATS["sumdb_origin"], public_key) == (
        "missing_signature"
    )


# --- C2SP spec examples (parse only: the specs publish no public key) ---


def test_c2sp_signed_note_example_splits_at_the_last_blank_line() -> None:
    note = parse_note(C2SP_NOTE)
    assert note.text == "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned è subito sera.\n"
    (signature,) = note.signatures
    assert (signature.name, signature.key_id.hex(), len(signature.signature)) == (
        "quasimodo.example/salvatore",
        "367ba04b",
        64,
    )


def test_c2sp_checkpoint_example_parses() -> None:
    checkpoint = parse_checkpoint(C2SP_CHECKPOINT)
    assert (checkpoint.origin, checkpoint.size) == ("example.com/behind-the-sofa", 20852163)
    assert checkpoint.root == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert [(s.name, len(s.signature)) for s in checkpoint.signatures] == [("example.com/behind-the-sofa", 64)]


# --- openexec-mcp checkpoints ---


def test_checkpoint_body_is_origin_size_and_base64_root() -> None:
    assert build_checkpoint(ORIGIN, 0, EMPTY_ROOT) == f"{ORIGIN}\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"


def test_signed_checkpoint_layout_and_round_trip() -> None:
    note = sign_checkpoint(ORIGIN, 42, ROOT, KEY)
    body, signature_line = note.split("\n\n")
    assert body + "\n" == build_checkpoint(ORIGIN, 42, ROOT)
    dash, name, blob = signature_line.rstrip("\n").split(" ")
    assert (dash, name) == ("\u2014", ORIGIN)
    assert base64.b64decode(blob)[:4] == note_key_id(ORIGIN, KEY.public_key())
    checkpoint = verify_checkpoint(note, ORIGIN, KEY.public_key())
    assert (checkpoint.origin, checkpoint.size, checkpoint.root) == (ORIGIN, 42, ROOT)
    assert parse_checkpoint(note) == checkpoint
    assert isinstance(checkpoint, Checkpoint)


def test_witness_cosignatures_and_other_keys_are_tolerated() -> None:
    note = sign_checkpoint(ORIGIN, 1, ROOT, KEY)
    cosigned = note + signed(build_checkpoint(ORIGIN, 1, ROOT), OTHER_KEY, "witness.example").split("\n\n")[1]
    assert len(verify_checkpoint(cosigned, ORIGIN, KEY.public_key()).signatures) == 2


def test_checkpoint_signed_by_another_key_is_missing_signature() -> None:
    note = sign_checkpoint(ORIGIN, 1, ROOT, OTHER_KEY)
    assert failure(verify_checkpoint, note, ORIGIN, KEY.public_key()) == "missing_signature"


def test_checkpoint_with_a_bad_signature_by_the_key_is_bad_signature() -> None:
    note = sign_checkpoint(ORIGIN, 1, ROOT, KEY)
    forged = note.replace("\n1\n", "\n2\n")  # the signature no longer covers the text
    assert failure(verify_checkpoint, forged, ORIGIN, KEY.public_key()) == "bad_signature"


def test_checkpoint_for_another_origin_signed_by_the_key_is_origin_mismatch() -> None:
    note = signed(build_checkpoint("other-server", 1, ROOT))
    assert failure(verify_checkpoint, note, ORIGIN, KEY.public_key()) == "origin_mismatch"


MALFORMED_BODIES = {
    "extension-line": f"{ORIGIN}\n1\n{base64.b64encode(ROOT).decode()}\nextension\n",
    "missing-root": f"{ORIGIN}\n1\n",
    "empty-origin": f"\n1\n{base64.b64encode(ROOT).decode()}\n",
    "leading-zero": f"{ORIGIN}\n01\n{base64.b64encode(ROOT).decode()}\n",
    "negative-size": f"{ORIGIN}\n-1\n{base64.b64encode(ROOT).decode()}\n",
    "plus-size": f"{ORIGIN}\n+1\n{base64.b64encode(ROOT).decode()}\n",
    "unicode-digit": f"{ORIGIN}\n\u0663\n{base64.b64encode(ROOT).decode()}\n",
    "size-too-large": f"{ORIGIN}\n{2**63}\n{base64.b64encode(ROOT).decode()}\n",
    "short-root": f"{ORIGIN}\n1\n{base64.b64encode(ROOT[:31]).decode()}\n",
    "unpadded-root": f"{ORIGIN}\n1\n{base64.b64encode(ROOT).decode().rstrip('=')}\n",
    "urlsafe-root": f"{ORIGIN}\n1\n{base64.urlsafe_b64encode(bytes([0xFB]) * 32).decode()}\n",
    "hex-root": f"{ORIGIN}\n1\n{ROOT.hex()}\n",
}


@pytest.mark.parametrize("body", MALFORMED_BODIES.values(), ids=MALFORMED_BODIES.keys())
def test_malformed_checkpoint_signed_by_the_key_is_malformed_checkpoint(body: str) -> None:
    note = signed(body)
    with pytest.raises(MalformedInputError):
        parse_checkpoint(note)
    assert failure(verify_checkpoint, note, ORIGIN, KEY.public_key()) == "malformed_checkpoint"


GOOD_LINE = sign_checkpoint(ORIGIN, 1, ROOT, KEY).split("\n\n")[1]
BLOB = GOOD_LINE.rstrip("\n").split(" ")[2]
BODY = build_checkpoint(ORIGIN, 1, ROOT)
MALFORMED_NOTES = {
    "tab": BODY.replace("1", "1\t") + "\n" + GOOD_LINE,
    "carriage-return": BODY.replace("\n", "\r\n", 1) + "\n" + GOOD_LINE,
    "lone-surrogate": BODY.replace(ORIGIN, ORIGIN + "\ud800") + "\n" + GOOD_LINE,
    "hyphens-not-em-dash": BODY + "\n" + GOOD_LINE.replace("\u2014", "--"),
    "plus-in-name": BODY + "\n" + GOOD_LINE.replace(ORIGIN, "open+exec"),
    "unpadded-signature": BODY + "\n" + GOOD_LINE.replace("=\n", "\n"),
    "short-signature": BODY + f"\n\u2014 {ORIGIN} AAAAAA==\n",
    "extra-field": BODY + f"\n\u2014 {ORIGIN} {BLOB} more\n",
    "too-large": BODY + "\n" + GOOD_LINE + "x" * MAX_NOTE_BYTES,
}


@pytest.mark.parametrize("note", MALFORMED_NOTES.values(), ids=MALFORMED_NOTES.keys())
def test_malformed_note_is_malformed_note(note: str) -> None:
    with pytest.raises(MalformedInputError):
        parse_checkpoint(note)
    assert failure(verify_checkpoint, note, ORIGIN, KEY.public_key()) == "malformed_note"


def test_oversized_note_bytes_are_refused_before_decoding() -> None:
    with pytest.raises(MalformedInputError, match="limit"):
        parse_note(b"x" * (MAX_NOTE_BYTES + 1))


@pytest.mark.parametrize(
    ("text", "name"),
    [("no newline", ORIGIN), ("a\tb\n", ORIGIN), ("text\n", "two words"), ("text\n", "a+b"), ("text\n", "")],
)
def test_signing_refuses_bad_text_or_key_name(text: str, name: str) -> None:
    with pytest.raises(ValueError, match="newline"):
        sign_note(text, name, KEY)


@pytest.mark.parametrize(
    ("origin", "size", "root"),
    [
        ("", 1, ROOT),
        ("a\nb", 1, ROOT),
        (ORIGIN, -1, ROOT),
        (ORIGIN, 2**63, ROOT),
        (ORIGIN, True, ROOT),
        (ORIGIN, 1, b"x"),
    ],
)
def test_building_refuses_bad_arguments(origin: str, size: int, root: bytes) -> None:
    with pytest.raises(ValueError, match="checkpoint"):
        build_checkpoint(origin, size, root)


# --- Properties ---


@given(position=st.integers(min_value=0), bit=st.integers(0, 7))
def test_any_flipped_bit_in_a_signed_checkpoint_fails(position: int, bit: int) -> None:
    note = sign_checkpoint(ORIGIN, 1234, ROOT, KEY).encode()
    tampered = bytearray(note)
    tampered[position % len(note)] ^= 1 << bit
    reason = failure(verify_checkpoint, bytes(tampered), ORIGIN, KEY.public_key())
    assert reason in {"malformed_note", "missing_signature", "bad_signature", "malformed_checkpoint", "origin_mismatch"}


@given(size=st.integers(0, 2**63 - 1), other=st.integers(0, 2**63 - 1))
def test_a_changed_size_fails_the_signature(size: int, other: int) -> None:
    note = sign_checkpoint(ORIGIN, size, ROOT, KEY)
    if other != size:
        forged = note.replace(f"\n{size}\n", f"\n{other}\n", 1)
        assert failure(verify_checkpoint, forged, ORIGIN, KEY.public_key()) == "bad_signature"
    assert verify_checkpoint(note, ORIGIN, KEY.public_key()).size == size


@given(st.one_of(st.text(), st.binary()))
def test_parsers_refuse_arbitrary_input_only_with_malformed_input(data: str | bytes) -> None:
    for parse in (parse_note, parse_checkpoint):
        with contextlib.suppress(MalformedInputError):
            parse(data)
