"""``openexec-mcp ledger verify``: audit the whole hash chain of receipts (SPEC §7)."""

from __future__ import annotations

import argparse
from typing import Any

from openexec_mcp.cli.receipt import read_public_keys
from openexec_mcp.config import load_settings
from openexec_mcp.core.ledger import LedgerAuditor
from openexec_mcp.errors import VerificationError
from openexec_mcp.keystore import SERVER_KEY_FILENAME, load_server_key
from openexec_mcp.store import open_store


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``ledger`` command group."""
    parser = commands.add_parser("ledger", help="the ledger of receipts")
    sub = parser.add_subparsers(dest="ledger_command", required=True, metavar="SUBCOMMAND")
    verify = sub.add_parser("verify", parents=[common], help="check every signature and prev link")
    verify.add_argument("--public-key", metavar="KEY", help="trusted server public key (default: the key in state_dir)")
    verify.set_defaults(run=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    """Walk the ledger from seq 0; exit 1 naming the first bad seq."""
    settings = load_settings(args.config)
    if args.public_key:
        public_keys = read_public_keys(args.public_key)
    else:
        key = load_server_key(settings.state_dir / SERVER_KEY_FILENAME)
        public_keys = {key.kid: key.public_key()}
    store = open_store(settings.storage_url(), sqlite_synchronous=settings.storage.sqlite_synchronous)
    auditor = LedgerAuditor(public_keys, log_id=settings.server_id)
    try:
        for entry in store.iter_entries():
            auditor.feed(entry.seq, entry.exec_id, entry.receipt_hash, entry.envelope)
    except VerificationError as exc:
        print(f"FAILED at seq {exc.seq}: {exc.reason}: {exc.message}")
        return 1
    finally:
        store.close()
    print(f"OK {auditor.size} receipts verified; head={auditor.head}")
    return 0
