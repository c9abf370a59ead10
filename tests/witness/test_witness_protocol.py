"""The C2SP witness (SPEC §14): ``POST /add-checkpoint`` answers as c2sp.org/tlog-witness says.

The witness runs in process over its real SQLite file (Starlette's test client drives its ASGI
app); the process-level flows (restarts, the execution server, a doctored log) are in
``test_witness_e2e.py``. Cosignatures are checked with the independent verifier of
``oe_testing.cosignature_verifier``, written from the C2SP texts alone.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from oe_testing.cosignature_verifier import IndependentVerificationError, verify_cosignature, verify_log_signature
from starlette.testclient import TestClient

from openexec_mcp.core.tlog.checkpoint import sign_checkpoint
from openexec_mcp.core.tlog.cosignature import (
    WitnessKey,
    format_add_checkpoint,
    parse_witness_key,
    verify_quorum,
    witness_vkey,
)
from openexec_mcp.core.tlog.merkle import (
    EMPTY_ROOT,
    consistency_proof,
    leaf_hash,
    root_from_leaves,
    subtree_hasher_from_leaves,
)
from openexec_mcp.errors import VerificationError
from openexec_mcp.witness.app import Witness, build_witness_app
from openexec_mcp.witness.state import WitnessState

ORIGIN = "log.example/witnessed"
LOG_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"test log key").digest())
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"another key").digest())
WITNESS_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"test witness key").digest())
WITNESS_NAME = "witness.example/w1"


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


class Log:
    """A log in memory: leaves, signed checkpoints, consistency proofs."""

    def __init__(self, size: int, tag: str = "") -> None:
        self.leaves = [leaf_hash(f"{tag}leaf {i}".encode()) for i in range(size)]

    def root(self, size: int) -> bytes:
        return root_from_leaves(self.leaves[:size])

    def note(self, size: int, key: Ed25519PrivateKey = LOG_KEY, origin: str = ORIGIN) -> str:
        return sign_checkpoint(origin, size, self.root(size), key)

    def proof(self, old: int, new: int) -> list[bytes]:
        if old in (0, new):
            return []
        return consistency_proof(old, new, subtree_hasher_from_leaves(self.leaves[:new]))

    def body(self, old: int, new: int, **kw: object) -> bytes:
        return format_add_checkpoint(old, self.proof(old, new), self.note(new, **kw))  # type: ignore[arg-type]


def make_witness(db: Path) -> Witness:
    logs = {ORIGIN: WitnessKey(ORIGIN, LOG_KEY.public_key())}
    return Witness(WITNESS_NAME, WITNESS_KEY, logs, WitnessState(db))


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    return TestClient(build_witness_app(make_witness(tmp_path / "witness.db")))


def post(client: TestClient, body: bytes) -> tuple[int, str, str]:
    answer = client.post("/add-checkpoint", content=body)
    return answer.status_code, answer.headers.get("content-type", ""), answer.text


def test_a_first_checkpoint_from_old_zero_is_cosigned_as_c2sp_specifies(client: TestClient) -> None:
    log = Log(10)
    status, _, text = post(client, log.body(0, 10))
    assert status == 200, text
    assert text.startswith("\u2014 " + WITNESS_NAME + " ") and text.endswith("\n")
    cosigned = log.note(10) + text
    timestamp = verify_cosignature(cosigned, WITNESS_NAME, raw(WITNESS_KEY))  # written from the C2SP text only
    assert timestamp > 1_700_000_000
    verify_log_signature(cosigned, ORIGIN, raw(LOG_KEY))  # the log's own line is untouched
    assert verify_quorum(cosigned, [WitnessKey(WITNESS_NAME, WITNESS_KEY.public_key())]) == {WITNESS_NAME: timestamp}


def test_a_checkpoint_extending_the_cosigned_one_with_a_valid_proof_is_cosigned(client: TestClient) -> None:
    log = Log(37)
    assert post(client, log.body(0, 5))[0] == 200
    for old, new in ((5, 8), (8, 8), (8, 37)):
        status, _, text = post(client, log.body(old, new))
        assert status == 200, (old, new, text)
        verify_cosignature(log.note(new) + text, WITNESS_NAME, raw(WITNESS_KEY))


def test_a_wrong_old_size_gets_409_with_the_witness_size_as_text_x_tlog_size(client: TestClient) -> None:
    log = Log(20)
    assert post(client, log.body(0, 7))[0] == 200
    for old in (0, 5, 9):
        status, content_type, text = post(client, log.body(old, 20))
        assert (status, content_type.split(";")[0], text) == (409, "text/x.tlog.size", "7\n")


def test_a_consistency_proof_that_does_not_verify_gets_422_and_is_kept_as_evidence(tmp_path: Path) -> None:
    witness = make_witness(tmp_path / "witness.db")
    client = TestClient(build_witness_app(witness))
    log, fork = Log(12), Log(12, tag="forked ")
    fork.leaves[:6] = log.leaves[:6]  # the fork shares the first 6 leaves, then rewrites leaf 6
    assert post(client, log.body(0, 9))[0] == 200
    # The forked checkpoint of size 12, validly signed by the log key, with its own (valid) proof from 9.
    status, _, text = post(client, format_add_checkpoint(9, fork.proof(9, 12), fork.note(12)))
    assert status == 422, text
    assert witness.state.evidence_count(ORIGIN) == 1
    latest = witness.state.latest(ORIGIN)
    assert latest is not None and (latest.size, latest.root) == (9, log.root(9))


def test_the_same_size_with_another_root_is_a_fork_never_cosigned(tmp_path: Path) -> None:
    witness = make_witness(tmp_path / "witness.db")
    client = TestClient(build_witness_app(witness))
    log, fork = Log(9), Log(9, tag="other ")
    assert post(client, log.body(0, 9))[0] == 200
    assert post(client, format_add_checkpoint(9, [], fork.note(9)))[0] == 422
    assert post(client, format_add_checkpoint(0, [], fork.note(9)))[0] == 409  # and a 409 does not help
    assert witness.state.evidence_count(ORIGIN) == 2


def test_an_old_size_above_the_checkpoint_size_is_400_and_never_rolls_back(client: TestClient) -> None:
    log = Log(10)
    assert post(client, log.body(0, 10))[0] == 200
    assert post(client, format_add_checkpoint(10, [], log.note(4)))[0] == 400
    assert post(client, format_add_checkpoint(4, [], log.note(4)))[0] == 409  # the witness holds 10


def test_an_unknown_origin_is_404_and_an_untrusted_or_bad_log_signature_403(client: TestClient) -> None:
    log = Log(4)
    assert post(client, format_add_checkpoint(0, [], log.note(4, origin="unknown.example/log")))[0] == 404
    assert post(client, format_add_checkpoint(0, [], log.note(4, key=OTHER_KEY)))[0] == 403
    note = log.note(4)
    line = note.rsplit("\n", 2)[1]
    tampered = note.replace(line, line[:-6] + ("AAAAA=" if not line.endswith("AAAAA=") else "BBBBB="))
    assert post(client, format_add_checkpoint(0, [], tampered))[0] in (400, 403)
    flipped = note.replace("\n4\n", "\n5\n")  # the signature no longer covers the text
    assert post(client, format_add_checkpoint(0, [], flipped))[0] == 403


@pytest.mark.parametrize(
    "body",
    [
        b"old 0\n",  # no empty line, no checkpoint
        b"old 00\n\n",  # leading zero
        b"new 0\n\n",
        b"old 0\nnot base64!\n\n",
        b"old 0\n" + b"".join(b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n" for _ in range(64)) + b"\n",
        b"\xff\xfe",
    ],
    ids=["no_checkpoint", "leading_zero", "no_old_line", "bad_proof_line", "64_proof_lines", "not_utf8"],
)
def test_a_malformed_request_is_400(client: TestClient, body: bytes) -> None:
    if body.endswith(b"\n\n"):
        body += Log(3).note(3).encode()
    assert post(client, body)[0] == 400


def test_size_zero_needs_the_empty_root_and_old_zero_an_empty_proof(client: TestClient) -> None:
    log = Log(8)
    empty = sign_checkpoint(ORIGIN, 0, EMPTY_ROOT, LOG_KEY)
    assert post(client, format_add_checkpoint(0, [], empty))[0] == 200
    wrong = sign_checkpoint(ORIGIN, 0, log.root(1), LOG_KEY)
    assert post(client, format_add_checkpoint(0, [], wrong))[0] == 422
    assert post(client, format_add_checkpoint(0, log.proof(3, 8), log.note(8)))[0] == 422


def test_concurrent_submissions_never_roll_the_witness_back(tmp_path: Path) -> None:
    witness = make_witness(tmp_path / "witness.db")
    log = Log(64)
    assert witness.add_checkpoint(log.body(0, 8))[0] == 200
    # Sixteen threads race, each with a valid checkpoint from size 8: exactly one may win.
    results: list[tuple[int, int]] = []
    barrier = threading.Barrier(16)

    def submit(size: int) -> None:
        barrier.wait()
        results.append((size, witness.add_checkpoint(log.body(8, size))[0]))

    threads = [threading.Thread(target=submit, args=(size,)) for size in range(9, 25)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [size for size, status in results if status == 200]
    assert len(winners) == 1 and sorted(status for _, status in results).count(409) == 15
    latest = witness.state.latest(ORIGIN)
    assert latest is not None and latest.size == winners[0]


def test_a_restarted_witness_remembers_what_it_cosigned(tmp_path: Path) -> None:
    log = Log(30)
    assert make_witness(tmp_path / "witness.db").add_checkpoint(log.body(0, 12))[0] == 200
    again = make_witness(tmp_path / "witness.db")  # a new process over the same file
    assert again.add_checkpoint(log.body(0, 30)) == (409, "text/x.tlog.size", "12\n")
    assert again.add_checkpoint(log.body(12, 30))[0] == 200


def test_the_monitoring_endpoint_serves_the_latest_cosigned_checkpoint(client: TestClient) -> None:
    log = Log(6)
    origin_hash = hashlib.sha256(ORIGIN.encode()).hexdigest()
    assert client.get(f"/{origin_hash}/checkpoint").status_code == 404
    _, _, line = post(client, log.body(0, 6))
    answer = client.get(f"/{origin_hash}/checkpoint")
    assert answer.status_code == 200 and answer.text == log.note(6) + line
    verify_cosignature(answer.text, WITNESS_NAME, raw(WITNESS_KEY))


def test_a_cosignature_by_another_key_under_the_witness_name_does_not_count() -> None:
    log = Log(5)
    witness = Witness(WITNESS_NAME, OTHER_KEY, {ORIGIN: WitnessKey(ORIGIN, LOG_KEY.public_key())}, None)  # type: ignore[arg-type]
    from openexec_mcp.core.tlog.cosignature import sign_cosignature

    note = log.note(5)
    forged = note + sign_cosignature(note.split("\n\n")[0] + "\n", witness.name, OTHER_KEY, 1_800_000_000)
    with pytest.raises(IndependentVerificationError):
        verify_cosignature(forged, WITNESS_NAME, raw(WITNESS_KEY))
    with pytest.raises(VerificationError) as failure:
        verify_quorum(forged, [WitnessKey(WITNESS_NAME, WITNESS_KEY.public_key())])
    assert failure.value.reason == "quorum_not_met"


def test_witness_keys_parse_from_name_and_base64_or_a_vkey() -> None:
    vkey = witness_vkey(WITNESS_NAME, WITNESS_KEY.public_key())
    import base64

    by_base64 = parse_witness_key(f"{WITNESS_NAME}={base64.b64encode(raw(WITNESS_KEY)).decode()}")
    assert parse_witness_key(vkey).key_id == by_base64.key_id == parse_witness_key(f"{WITNESS_NAME}={vkey}").key_id
    assert by_base64.key_id == hashlib.sha256(WITNESS_NAME.encode() + b"\n\x04" + raw(WITNESS_KEY)).digest()[:4]


def test_two_witness_processes_on_one_state_file_still_never_roll_back(tmp_path: Path) -> None:
    # Two WitnessState objects share nothing but the SQLite file, as two processes would: only the
    # BEGIN IMMEDIATE transaction orders them.
    first, second = make_witness(tmp_path / "witness.db"), make_witness(tmp_path / "witness.db")
    log = Log(64)
    assert first.add_checkpoint(log.body(0, 8))[0] == 200
    results: list[tuple[int, int]] = []
    barrier = threading.Barrier(12)

    def submit(witness: Witness, size: int) -> None:
        barrier.wait()
        results.append((size, witness.add_checkpoint(log.body(8, size))[0]))

    threads = [threading.Thread(target=submit, args=(first if size % 2 else second, size)) for size in range(9, 21)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [size for size, status in results if status == 200]
    assert len(winners) == 1 and [status for _, status in results].count(409) == 11
    latest = second.state.latest(ORIGIN)
    assert latest is not None and latest.size == winners[0]


def test_the_independent_verifier_never_imports_the_project() -> None:
    source = (Path(__file__).parents[1] / "oe_testing" / "cosignature_verifier.py").read_text()
    assert "openexec_mcp" not in source.split('"""', 2)[2]  # code only; the docstring may name it
