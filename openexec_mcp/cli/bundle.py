"""``openexec-mcp ledger bundle`` and ``openexec-mcp bundle verify``: one-file evidence (SPEC §14).

- ``ledger bundle [--run RUN_ID | --exec EXEC_ID ...] [--out FILE]`` (needs the store and the
  state directory): the receipts asked for, their inclusion proofs against the largest checkpoint
  that reached ``ledger.witness_quorum`` cosignatures and covers them all (without witnesses
  configured: a checkpoint covering every receipt), and the server's public key. Exit 2 when no
  witnessed checkpoint covers them yet.
- ``bundle verify BUNDLE --public-key KEY [--witness NAME=KEY ...] [--quorum N]`` (offline): see
  :func:`~openexec_mcp.core.bundle.verify_bundle`. Exit 0 verified, 1 verification failed, 2
  unreadable input or bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from openexec_mcp.cli.receipt import read_public_keys, read_witnesses
from openexec_mcp.config import load_settings
from openexec_mcp.core.bundle import build_bundle, verify_bundle
from openexec_mcp.core.canonical import json_object
from openexec_mcp.core.tlog.checkpoint import parse_checkpoint
from openexec_mcp.errors import ConfigError, MalformedInputError, VerificationError

__all__ = ["register", "register_ledger", "run_bundle", "run_verify"]


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``bundle`` command group (``bundle verify``)."""
    parser = commands.add_parser("bundle", help="evidence bundles (receipts, proofs, a witnessed checkpoint)")
    sub = parser.add_subparsers(dest="bundle_command", required=True, metavar="SUBCOMMAND")
    verify = sub.add_parser("verify", parents=[common], help="verify an evidence bundle offline")
    verify.add_argument("file", type=Path, help="the bundle JSON ('-' for stdin)")
    verify.add_argument("--public-key", required=True, metavar="KEY", help="the trusted server public key")
    add_witness_arguments(verify)
    verify.set_defaults(run=run_verify)


def add_witness_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--witness NAME=KEY`` (repeatable) and ``--quorum N``."""
    parser.add_argument(
        "--witness",
        action="append",
        default=[],
        metavar="NAME=KEY",
        dest="witnesses",
        help="a trusted witness: its name and public key (base64 raw 32 bytes, or its vkey); repeatable",
    )
    parser.add_argument(
        "--quorum", type=int, metavar="N", help="valid cosignatures required (default: every --witness)"
    )


def register_ledger(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``ledger bundle``."""
    bundle = sub.add_parser("bundle", parents=[common], help="write an evidence bundle (JSON) for receipts")
    which = bundle.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", dest="run_filter", metavar="RUN_ID", help="every receipt of this run")
    which.add_argument("--exec", dest="exec_ids", action="append", metavar="EXEC_ID", help="this receipt; repeatable")
    bundle.add_argument("--out", type=Path, metavar="FILE", help="write here instead of stdout")
    bundle.set_defaults(run=run_bundle)


def run_bundle(args: argparse.Namespace) -> int:
    """Write the bundle; exit 0, or 2 when a receipt is unknown or no witnessed checkpoint covers them."""
    from openexec_mcp.cli.ledger_audit import open_configured_store
    from openexec_mcp.keystore import SERVER_KEY_FILENAME, load_server_key
    from openexec_mcp.ledger.checkpoints import Ledger
    from openexec_mcp.ledger.witnessing import build_witnessing
    from openexec_mcp.store.base import LedgerEntry

    settings = load_settings(args.config)
    server_key = load_server_key(settings.state_dir / SERVER_KEY_FILENAME)
    store = open_configured_store(settings)
    try:
        ledger = Ledger(store, server_key, settings.server_id)
        entries: list[LedgerEntry] = []
        if args.run_filter is not None:
            entries = list(store.iter_entries(0, run_id=args.run_filter))
        else:
            for exec_id in args.exec_ids:
                entry = store.get_entry(exec_id)
                if entry is None:
                    raise ConfigError(f"the ledger holds no receipt with exec_id {exec_id}")
                entries.append(entry)
        if not entries:
            raise ConfigError("no receipt matches")
        needed = max(entry.seq for entry in entries) + 1
        witnessing = build_witnessing(settings, ledger)  # validates [ledger] witnesses; never started here
        if witnessing is None:
            note = ledger.checkpoint().note
        else:
            try:
                found = witnessing.witnessed(needed)
            finally:
                witnessing.cosignatures.close()
            if found is None:
                raise ConfigError(
                    f"no checkpoint of size {needed} or more has reached the quorum of {witnessing.quorum} "
                    "cosignatures yet; wait for the witnesses (GET /health shows their sizes) and retry"
                )
            note = found
        size = parse_checkpoint(note).size
        items = [(json.loads(entry.envelope), ledger.inclusion_proof(entry.seq, size), entry.seq) for entry in entries]
    finally:
        store.close()
    document = build_bundle(note, server_key.public_raw, items)
    text = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        try:
            args.out.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write {args.out}: {exc.strerror}") from None
    print(f"bundle: {len(items)} receipt(s) against checkpoint size {size}", file=sys.stderr)
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """Verify a bundle offline; exit 0, 1 or 2."""
    public_keys = read_public_keys(args.public_key)
    witnesses = read_witnesses(args.witnesses, args.quorum)
    try:
        text = sys.stdin.read() if str(args.file) == "-" else args.file.read_text(encoding="utf-8")
        document = json.loads(text)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read bundle {args.file}: {exc}") from None
    if json_object(document) is None:
        raise ConfigError(f"bundle {args.file} is not a JSON object")
    try:
        report = verify_bundle(document, public_keys, witnesses, args.quorum)
    except (VerificationError, MalformedInputError) as exc:
        reason = getattr(exc, "reason", "malformed")
        where = f" at index {exc.seq}" if isinstance(exc, VerificationError) and exc.seq is not None else ""
        print(f"INVALID {reason}{where}: {exc.message}")
        return 1
    checkpoint = report.checkpoint
    print(
        f"OK {len(report.receipts)} receipt(s) included in checkpoint {checkpoint.origin} size={checkpoint.size} "
        f"root={checkpoint.root.hex()}"
    )
    if report.cosigners:
        print(f"OK cosigned by {len(report.cosigners)} witness(es): {', '.join(sorted(report.cosigners))}")
    return 0
