"""Generate the receipt conformance cases under ``tests/conformance/receipts/`` (run once; output committed).

    python tests/conformance/make_cases.py            # (re)write every case directory
    python tests/conformance/make_cases.py --check    # exit 1 if the committed files differ

Each case is a directory holding what an auditor holds: ``receipt.json`` (a DSSE receipt, or a
SPEC §6 result envelope with one), ``proof.txt`` (the C2SP ``tlog-proof`` of
``GET /ledger/proof/{exec_id}``), ``checkpoint.txt`` (the checkpoint inside the proof, for
reading), ``public_key.pem`` (the server key the auditor trusts), ``expected.json`` (``valid`` and
the failure ``reason``) and a ``README.md``. ``_fail`` in a case's name means verification must
fail. ``tests/test_conformance.py`` runs ``openexec-mcp receipt verify receipt.json --public-key
public_key.pem --proof proof.txt`` on each.

Everything is deterministic (keys from fixed seeds, fixed ids and times), so running this again
rewrites identical bytes; the test checks that too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from openexec_mcp.core.canonical import canonicalize, sha256_hex
from openexec_mcp.core.receipt import ServerKey, SignedReceipt, sign_receipt
from openexec_mcp.core.tlog.checkpoint import sign_checkpoint
from openexec_mcp.core.tlog.merkle import inclusion_proof, root_from_leaves, subtree_hasher_from_leaves
from openexec_mcp.core.tlog.proof import format_inclusion_proof

ROOT = Path(__file__).resolve().parent / "receipts"
ORIGIN = "conformance.example/openexec"


def _key(seed: str) -> ServerKey:
    return ServerKey.from_private_key(Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed.encode()).digest()))


SERVER = _key("openexec-mcp conformance: the server key")
OTHER = _key("openexec-mcp conformance: another key")


def _hex(label: str, size: int = 64) -> str:
    return hashlib.sha256(label.encode()).hexdigest()[:size]


def result(seq: int) -> dict[str, Any]:
    """The result of the executed call at ``seq`` (a replay at ``seq`` returns that of ``seq - 2``)."""
    return {"echo": {"msg": f"hello {seq}"}}


def body(seq: int, prev: str | None, **changes: Any) -> dict[str, Any]:
    """A SPEC §7 v1 receipt body, deterministic in ``seq``; ``result_hash`` covers :func:`result`."""
    status = ("executed", "denied", "replayed", "failed")[seq % 4]
    covered = {"executed": seq, "replayed": seq - 2}.get(status)
    made: dict[str, Any] = {
        "v": 1,
        "exec_id": _hex(f"exec {seq}", 32),
        "seq": seq,
        "prev": prev,
        "log_id": ORIGIN,
        "tenant_id": "default",
        "action": "echo",
        "action_hash": _hex(f"action {seq}"),
        "nonce": f"conformance-{seq:04d}",
        "run_id": "conformance-run",
        "status": status,
        "error_code": {"denied": "approval_required", "failed": "handler_error"}.get(status),
        "approval": {"method": "auto", "approval_id": None, "kid": None, "issued_by": None, "artifact_hash": None},
        "result_hash": sha256_hex(canonicalize(result(covered))) if covered is not None else None,
        "original_exec_id": _hex(f"exec {seq - 2}", 32) if status == "replayed" else None,
        "policy_hash": _hex("policy"),
        "started_at": f"2025-01-01T00:00:{seq:02d}.000Z",
        "finished_at": f"2025-01-01T00:00:{seq:02d}.250Z",
        "server": {"name": "openexec-mcp", "version": "1.0.0"},
    }
    made.update(changes)
    return made


@dataclass
class Ledger:
    """An in-memory ledger: signed receipts, their leaves, checkpoints and proofs."""

    receipts: list[SignedReceipt]

    @classmethod
    def build(cls, size: int, edit: Callable[[int, dict[str, Any]], dict[str, Any]] = lambda _, b: b) -> Ledger:
        receipts: list[SignedReceipt] = []
        prev: str | None = None
        for seq in range(size):
            signed = sign_receipt(edit(seq, body(seq, prev)), SERVER)
            receipts.append(signed)
            prev = signed.receipt_hash
        return cls(receipts)

    @property
    def leaves(self) -> list[bytes]:
        return [bytes.fromhex(receipt.receipt_hash) for receipt in self.receipts]

    def checkpoint(self, size: int, key: ServerKey = SERVER) -> str:
        return sign_checkpoint(ORIGIN, size, root_from_leaves(self.leaves[:size]), key.private_key)

    def proof(self, seq: int, size: int, key: ServerKey = SERVER) -> str:
        path = inclusion_proof(seq, size, subtree_hasher_from_leaves(self.leaves[:size]))
        return format_inclusion_proof(seq, path, self.checkpoint(size, key))


@dataclass
class Case:
    name: str
    summary: str
    receipt: Any
    proof: str
    reason: str | None


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def _checkpoint_of(proof: str) -> str:
    return proof.split("\n\n", 1)[1]


def cases() -> list[Case]:
    """Every case, built from one 12-receipt ledger (and, where a case needs one, a forked ledger)."""
    real = Ledger.build(12)
    size = 12
    r = real.receipts
    # A fork: another receipt for seq 6, validly signed by the server key, that is not in the real log.
    fork = sign_receipt(body(6, r[5].receipt_hash, nonce="forked-nonce"), SERVER)
    # A log in which the server signed seq 7 with a wrong prev and still put it in its tree.
    bent = Ledger.build(size, lambda seq, b: {**b, "prev": _hex("not the previous receipt")} if seq == 7 else b)
    wrong_kid = {**r[6].envelope, "signatures": [{"keyid": OTHER.kid, "sig": r[6].envelope["signatures"][0]["sig"]}]}
    payload = bytearray(base64.b64decode(r[6].envelope["payload"]))
    payload[payload.index(b'"echo"') + 1] = ord("E")  # "Echo": one byte of the body
    tampered = {**r[6].envelope, "payload": base64.b64encode(bytes(payload)).decode()}
    head, _, note = real.proof(6, size).partition("\n\n")
    truncated = "\n".join(head.split("\n")[:-1]) + "\n\n" + note  # the last hash of the audit path dropped
    stale = format_inclusion_proof(8, [], real.checkpoint(5))
    result_envelope = {
        "status": "executed",
        "exec_id": r[4].body["exec_id"],
        "action": "echo",
        "result": result(4),
        "error": None,
        "approval_request": None,
        "receipt": r[4].envelope,
        "receipt_hash": r[4].receipt_hash,
    }
    return [
        Case(
            "executed_pass",
            "A receipt (seq 6) and its proof against the latest checkpoint (size 12).",
            r[6].envelope,
            real.proof(6, size),
            None,
        ),
        Case(
            "first_receipt_pass", "The receipt at seq 0, whose prev is null.", r[0].envelope, real.proof(0, size), None
        ),
        Case(
            "last_receipt_odd_seq_pass",
            "The last receipt (seq 11): an odd seq, so the proof's first hash is leaf 10 and prev is checked against it.",
            r[11].envelope,
            real.proof(11, size),
            None,
        ),
        Case(
            "result_envelope_pass",
            "A SPEC §6 result envelope from POST /execute, holding the receipt (seq 4) whose result_hash covers "
            "its result.",
            result_envelope,
            real.proof(4, size),
            None,
        ),
        Case(
            "result_envelope_result_altered_fail",
            "The result envelope of seq 4 with its result changed: the receipt and its proof verify, but the "
            "receipt's result_hash does not cover the result beside it.",
            {**result_envelope, "result": {"echo": {"msg": "not what was signed"}}},
            real.proof(4, size),
            "result_mismatch",
        ),
        Case(
            "older_checkpoint_pass",
            "A receipt (seq 3) proven against an older checkpoint that covers it (size 5).",
            r[3].envelope,
            real.proof(3, 5),
            None,
        ),
        Case(
            "swapped_leaf_fail",
            "A different receipt for seq 6, validly signed by the server key but not the one in the log, with the "
            "real proof of seq 6: the recomputed leaf does not lead to the checkpoint's root.",
            fork.envelope,
            real.proof(6, size),
            "root_mismatch",
        ),
        Case(
            "wrong_kid_fail",
            "The receipt of seq 6 with its keyid naming a key the auditor does not trust.",
            wrong_kid,
            real.proof(6, size),
            "unknown_key",
        ),
        Case(
            "tampered_receipt_fail",
            "The receipt of seq 6 with one byte of its body changed.",
            tampered,
            real.proof(6, size),
            "bad_signature",
        ),
        Case(
            "stale_checkpoint_fail",
            "The receipt of seq 8 with a proof against a checkpoint of size 5, which cannot hold it.",
            r[8].envelope,
            stale,
            "index_out_of_range",
        ),
        Case(
            "broken_prev_fail",
            "A receipt (seq 7) the server signed with a prev that is not leaf 6, and put in its tree anyway: "
            "inclusion holds, but the proof's first hash (leaf 6) is not the receipt's prev.",
            bent.receipts[7].envelope,
            bent.proof(7, size),
            "broken_prev",
        ),
        Case(
            "truncated_proof_fail",
            "The proof of seq 6 with the last hash of its audit path removed.",
            r[6].envelope,
            truncated,
            "wrong_proof_length",
        ),
        Case(
            "wrong_index_fail",
            "The receipt of seq 6 with the proof of seq 5.",
            r[6].envelope,
            real.proof(5, size),
            "index_mismatch",
        ),
        Case(
            "forged_checkpoint_fail",
            "The proof of seq 6 whose checkpoint (same origin, same root) is signed by another key.",
            r[6].envelope,
            real.proof(6, size, key=OTHER),
            "missing_signature",
        ),
    ]


def readme(case: Case) -> str:
    verdict = "must verify (exit 0)" if case.reason is None else f"must fail (exit 1) with reason `{case.reason}`"
    return (
        f"# {case.name}\n\n{case.summary}\n\nExpected: {verdict}.\n\n"
        "```bash\nopenexec-mcp receipt verify receipt.json --public-key public_key.pem --proof proof.txt\n```\n\n"
        "Generated by `tests/conformance/make_cases.py`; do not edit by hand.\n"
    )


def files(case: Case) -> dict[str, str]:
    """The files of one case directory, by name."""
    pem = SERVER.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    return {
        "receipt.json": _json(case.receipt),
        "proof.txt": case.proof,
        "checkpoint.txt": _checkpoint_of(case.proof),
        "public_key.pem": pem,
        "expected.json": _json({"valid": case.reason is None, "reason": case.reason}),
        "README.md": readme(case),
    }


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    differ = []
    for case in cases():
        directory = ROOT / case.name
        for name, text in files(case).items():
            path = directory / name
            if check:
                if not path.is_file() or path.read_text(encoding="utf-8") != text:
                    differ.append(str(path))
            else:
                directory.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
    if differ:
        print("out of date:", *differ, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
