"""Generate the evidence-bundle conformance cases under ``tests/conformance/bundles/`` (SPEC §14; output committed).

    python tests/conformance/make_bundle_cases.py            # (re)write every case directory
    python tests/conformance/make_bundle_cases.py --check    # exit 1 if the committed files differ

Each case directory holds what an auditor holds: ``bundle.json`` (SPEC §14 bundle), ``public_key.pem``
(the server key the auditor trusts), ``witnesses.txt`` (the witnesses it trusts, one ``NAME=KEY`` a
line), ``expected.json`` (``valid``, the failure ``reason`` and the ``quorum`` to require) and a
``README.md``. ``_fail`` in a name means verification must fail. ``tests/ledger/test_bundle_conformance.py``
runs ``openexec-mcp bundle verify bundle.json --public-key public_key.pem --witness ... --quorum N``.

The receipts and the server key are those of ``make_cases.py``; witness keys come from fixed seeds
and cosignature timestamps are fixed, so the bytes are deterministic.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_cases import SERVER, Ledger

from openexec_mcp.core.bundle import build_bundle
from openexec_mcp.core.tlog.cosignature import cosignature_key_id, sign_cosignature
from openexec_mcp.core.tlog.merkle import inclusion_proof, subtree_hasher_from_leaves

ROOT = Path(__file__).resolve().parent / "bundles"
TIMESTAMP = 1_767_225_600  # 2026-01-01T00:00:00Z


def _key(seed: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed.encode()).digest())


W1, W2, STRANGER = _key("conformance witness 1"), _key("conformance witness 2"), _key("conformance: a stranger")
W1_NAME, W2_NAME, STRANGER_NAME = "witness1.conformance.example/w", "witness2.conformance.example/w", "other.example/w"


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _text(note: str) -> str:
    return note.split("\n\n", 1)[0] + "\n"


def cosign(note: str, name: str, key: Ed25519PrivateKey, *, text_of: str | None = None) -> str:
    return sign_cosignature(_text(text_of or note), name, key, TIMESTAMP)


@dataclass
class Case:
    name: str
    summary: str
    bundle: dict[str, Any]
    quorum: int
    reason: str | None


def cases() -> list[Case]:
    real = Ledger.build(12)
    size, picks = 12, (3, 6, 11)
    note = real.checkpoint(size)
    hasher = subtree_hasher_from_leaves(real.leaves[:size])

    def bundle(
        checkpoint: str,
        seqs: tuple[int, ...] = picks,
        *,
        paths: dict[int, list[bytes]] | None = None,
        envelopes: dict[int, Any] | None = None,
    ) -> dict[str, Any]:
        items = [
            (
                (envelopes or {}).get(seq, real.receipts[seq].envelope),
                (paths or {}).get(seq, inclusion_proof(seq, size, hasher)),
                seq,
            )
            for seq in seqs
        ]
        return build_bundle(checkpoint, SERVER.public_raw, items)

    both = note + cosign(note, W1_NAME, W1) + cosign(note, W2_NAME, W2)
    only_w1 = note + cosign(note, W1_NAME, W1)
    # W2's name and key ID, but signed by another key.
    forged_line = cosign(note, W2_NAME, STRANGER)
    blob = base64.b64decode(forged_line.split(" ")[2])
    wrong_key = (
        only_w1
        + f"\u2014 {W2_NAME} "
        + base64.b64encode(cosignature_key_id(W2_NAME, W2.public_key()) + blob[4:]).decode()
        + "\n"
    )
    impostor = only_w1 + forged_line  # W2's name with the stranger's own key ID: not W2's line at all
    older = real.checkpoint(11)
    replayed = note + cosign(note, W1_NAME, W1) + cosign(older, W2_NAME, W2)
    payload = bytearray(base64.b64decode(real.receipts[6].envelope["payload"]))
    payload[payload.index(b'"echo"') + 1] = ord("E")
    flipped = {**real.receipts[6].envelope, "payload": base64.b64encode(bytes(payload)).decode()}
    other_path = inclusion_proof(6, 8, subtree_hasher_from_leaves(real.leaves[:8]))
    extra = both + cosign(note, STRANGER_NAME, STRANGER)
    return [
        Case(
            "witnessed_pass",
            "Receipts 3, 6 and 11 against checkpoint 12, cosigned by both witnesses; quorum 2.",
            bundle(both),
            2,
            None,
        ),
        Case(
            "one_of_two_pass", "Only witness 1 cosigned; the auditor asks for a quorum of 1.", bundle(only_w1), 1, None
        ),
        Case(
            "unknown_cosigner_ignored_pass",
            "Both witnesses and a third, untrusted one cosigned: the unknown line is ignored (c2sp.org/signed-note).",
            bundle(extra),
            2,
            None,
        ),
        Case(
            "quorum_not_met_fail",
            "Only witness 1 cosigned; the auditor requires both.",
            bundle(only_w1),
            2,
            "quorum_not_met",
        ),
        Case(
            "wrong_key_cosignature_fail",
            "Witness 2's line (its name and key ID) carries a signature by another key: the note is rejected.",
            bundle(wrong_key),
            2,
            "bad_cosignature",
        ),
        Case(
            "impostor_witness_fail",
            "A line under witness 2's name, by another key with its own key ID: not a cosignature by witness 2.",
            bundle(impostor),
            2,
            "quorum_not_met",
        ),
        Case(
            "cosignature_of_another_checkpoint_fail",
            "Witness 2's cosignature of checkpoint 11 pasted onto checkpoint 12.",
            bundle(replayed),
            2,
            "bad_cosignature",
        ),
        Case(
            "receipt_flipped_fail",
            "One byte of receipt 6's body changed.",
            bundle(both, envelopes={6: flipped}),
            2,
            "bad_signature",
        ),
        Case(
            "proof_for_another_checkpoint_fail",
            "Receipt 6 carries its inclusion proof in the tree of size 8, not in the bundle's checkpoint (12).",
            bundle(both, paths={6: other_path}),
            2,
            "wrong_proof_length",
        ),
    ]


def readme(case: Case) -> str:
    verdict = "must verify (exit 0)" if case.reason is None else f"must fail (exit 1) with reason `{case.reason}`"
    return (
        f"# {case.name}\n\n{case.summary}\n\nExpected: {verdict}.\n\n"
        "```bash\nopenexec-mcp bundle verify bundle.json --public-key public_key.pem \\\n"
        f"  $(sed 's/^/--witness /' witnesses.txt) --quorum {case.quorum}\n```\n\n"
        "Generated by `tests/conformance/make_bundle_cases.py`; do not edit by hand.\n"
    )


def files(case: Case) -> dict[str, str]:
    """The files of one case directory, by name."""
    pem = SERVER.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    witnesses = "".join(
        f"{name}={base64.b64encode(_raw(key)).decode()}\n" for name, key in ((W1_NAME, W1), (W2_NAME, W2))
    )
    return {
        "bundle.json": json.dumps(case.bundle, indent=1, ensure_ascii=False) + "\n",
        "public_key.pem": pem,
        "witnesses.txt": witnesses,
        "expected.json": json.dumps({"valid": case.reason is None, "reason": case.reason, "quorum": case.quorum})
        + "\n",
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
