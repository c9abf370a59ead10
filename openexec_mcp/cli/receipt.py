"""``openexec-mcp receipt verify``: check a receipt offline with only the server's public key.

With ``--proof FILE`` (the ``tlog-proof`` of ``GET /ledger/proof/{exec_id}``) it also proves the
receipt is in the ledger: the leaf hash is recomputed from the envelope in FILE (a supplied
``receipt_hash`` is never trusted), the audit path must lead to the root of a checkpoint signed by
the same key for the receipt's ``log_id`` (SPEC §7, §10).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from openexec_mcp.core.canonical import json_object
from openexec_mcp.core.evidence import verify_receipt_inclusion
from openexec_mcp.core.receipt import parse_server_public_keys, receipt_hash, verify_envelope_result, verify_receipt
from openexec_mcp.core.tlog.cosignature import WitnessKey, parse_witness_key, verify_quorum
from openexec_mcp.core.tlog.proof import parse_inclusion_proof
from openexec_mcp.errors import ConfigError, MalformedInputError, VerificationError


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``receipt`` command group."""
    parser = commands.add_parser("receipt", help="receipts")
    sub = parser.add_subparsers(dest="receipt_command", required=True, metavar="SUBCOMMAND")
    verify = sub.add_parser("verify", parents=[common], help="verify a receipt offline")
    verify.add_argument("file", type=Path, help="a DSSE receipt, or a result envelope holding one ('-' for stdin)")
    verify.add_argument(
        "--public-key",
        required=True,
        metavar="KEY",
        help="the server public key: base64 raw 32 bytes, PEM, or a file holding either or the GET /keys JSON",
    )
    verify.add_argument(
        "--proof", type=Path, metavar="FILE", help="its inclusion proof (GET /ledger/proof/{exec_id}, tlog-proof text)"
    )
    verify.add_argument(
        "--witness",
        action="append",
        default=[],
        metavar="NAME=KEY",
        dest="witnesses",
        help="with --proof: a trusted witness whose cosignature the checkpoint needs (base64 raw key or vkey)",
    )
    verify.add_argument(
        "--quorum", type=int, metavar="N", help="valid cosignatures required (default: every --witness)"
    )
    verify.set_defaults(run=run_verify)


def read_witnesses(values: list[str], quorum: int | None) -> list[WitnessKey]:
    """Read ``--witness NAME=KEY`` values and check ``--quorum`` against them (SPEC §14).

    Raises:
        ConfigError: A malformed value, two witnesses of one name, or a quorum out of ``1..len``.
    """
    witnesses: list[WitnessKey] = []
    for value in values:
        try:
            witnesses.append(parse_witness_key(value))
        except MalformedInputError as exc:
            raise ConfigError(f"--witness {value!r}: {exc.message}") from None
    if len({w.name for w in witnesses}) != len(witnesses):
        raise ConfigError("--witness: two witnesses share a name")
    if quorum is not None and not 1 <= quorum <= len(witnesses):
        raise ConfigError("--quorum must be between 1 and the number of --witness keys")
    return witnesses


def read_public_keys(value: str) -> dict[str, Any]:
    """Read ``--public-key``: the key itself, or a file that holds it.

    Raises:
        ConfigError: Neither a valid key nor a readable file with one.
    """
    path = Path(value)
    try:
        text = path.read_text() if len(value) < 4096 and path.is_file() else value
        return parse_server_public_keys(text)
    except (OSError, MalformedInputError) as exc:
        raise ConfigError(f"--public-key: {getattr(exc, 'message', exc)}") from None


def run_verify(args: argparse.Namespace) -> int:
    """Verify one receipt (and its inclusion proof); exit 0 valid, 1 invalid, 2 unreadable."""
    public_keys = read_public_keys(args.public_key)
    witnesses = read_witnesses(args.witnesses, args.quorum)
    if witnesses and args.proof is None:
        raise ConfigError("--witness needs --proof: cosignatures are on the proof's checkpoint")
    try:
        proof = args.proof.read_bytes() if args.proof is not None else None
    except OSError as exc:
        raise ConfigError(f"cannot read proof {args.proof}: {exc.strerror}") from None
    try:
        text = sys.stdin.read() if str(args.file) == "-" else args.file.read_text()
        document = json.loads(text)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read receipt {args.file}: {exc}") from None
    wrapper = json_object(document)
    envelope = wrapper.get("receipt", document) if wrapper is not None else document
    checkpoint = None
    cosigners: dict[str, int] = {}
    try:
        if proof is None:
            body = verify_receipt(envelope, public_keys)
            leaf = receipt_hash(envelope)
        else:
            evidence = verify_receipt_inclusion(envelope, proof, public_keys)
            body, leaf, checkpoint = evidence.body, evidence.receipt_hash, evidence.checkpoint
            if witnesses:  # SPEC §14: the proof's checkpoint must carry a quorum of cosignatures
                cosigners = verify_quorum(parse_inclusion_proof(proof).checkpoint, witnesses, args.quorum)
    except (VerificationError, MalformedInputError) as exc:
        reason = getattr(exc, "reason", "malformed")
        print(f"INVALID {reason}: {exc.message}")
        return 1
    if wrapper is not None and wrapper.get("receipt_hash") not in (None, leaf):
        print("INVALID receipt_hash: the envelope's receipt_hash is not the hash of its receipt")
        return 1
    if wrapper is not None and "receipt" in wrapper:  # a whole result envelope: its result is signed too
        try:
            verify_envelope_result(wrapper.get("result"), body)
        except VerificationError as exc:
            print(f"INVALID {exc.reason}: {exc.message}")
            return 1
    print(
        f"OK seq={body['seq']} exec_id={body['exec_id']} status={body['status']} action={body['action']} "
        f"receipt_hash={leaf}"
    )
    if checkpoint is not None:
        print(
            f"OK included at index {body['seq']} of checkpoint {checkpoint.origin} size={checkpoint.size} "
            f"root={checkpoint.root.hex()}"
        )
    if witnesses:
        print(f"OK cosigned by {len(cosigners)} witness(es): {', '.join(sorted(cosigners))}")
    return 0
