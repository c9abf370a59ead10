"""``openexec-mcp ledger verify | checkpoint | consistency``: audit the ledger, sign or check checkpoints.

- ``verify [--public-key KEY] [--since CHECKPOINT_FILE] [--workers N]`` (needs the store): every
  signature and ``prev`` link, the tree root against the latest stored checkpoint and against
  the stored tree nodes, and with ``--since`` against a checkpoint the auditor kept earlier (the
  ledger must still begin with exactly the receipts that checkpoint covered).
- ``checkpoint`` (needs the store and the server key): print a checkpoint covering every receipt,
  signing one if the latest is behind.
- ``consistency OLD NEW --proof FILE --public-key KEY`` (offline, needs neither): check that
  checkpoint NEW extends checkpoint OLD with the JSON of ``GET /ledger/consistency``.

Exit codes (SPEC §9): 0 verified, 1 verification failed (the first bad ``seq`` is named when
there is one), 2 usage or config error.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from openexec_mcp.cli.progress import Progress
from openexec_mcp.cli.receipt import read_public_keys
from openexec_mcp.config import Settings, load_settings
from openexec_mcp.core.audit import LedgerAuditor
from openexec_mcp.core.encoding import b64decode_strict
from openexec_mcp.core.evidence import verify_checkpoint_consistency, verify_signed_checkpoint
from openexec_mcp.core.tlog.checkpoint import Checkpoint
from openexec_mcp.errors import ConfigError, MalformedInputError, VerificationError
from openexec_mcp.keystore import SERVER_KEY_FILENAME, load_server_key
from openexec_mcp.ledger.audit import AuditReport, audit_entries
from openexec_mcp.store import Store, open_store

__all__ = [
    "open_configured_store",
    "register",
    "run_checkpoint",
    "run_consistency",
    "run_verify",
    "trusted_public_keys",
]

DEFAULT_WORKERS = min(4, max(1, (os.cpu_count() or 1) - 1))


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``ledger verify``, ``ledger checkpoint`` and ``ledger consistency``."""
    verify = sub.add_parser("verify", parents=[common], help="audit every receipt, prev link and the tree root")
    verify.add_argument("--public-key", metavar="KEY", help="trusted server public key (default: the key in state_dir)")
    verify.add_argument(
        "--since",
        metavar="CHECKPOINT_FILE",
        type=Path,
        help="a checkpoint kept earlier: the ledger must still begin with exactly the receipts it covered",
    )
    verify.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        metavar="N",
        help=f"threads verifying signatures beside the reader (0: none; default {DEFAULT_WORKERS})",
    )
    verify.set_defaults(run=run_verify)
    checkpoint = sub.add_parser("checkpoint", parents=[common], help="print (signing if needed) the current checkpoint")
    checkpoint.set_defaults(run=run_checkpoint)
    consistency = sub.add_parser(
        "consistency",
        parents=[common],
        help="offline: check that checkpoint NEW extends checkpoint OLD",
    )
    consistency.add_argument("old", type=Path, metavar="OLD", help="the checkpoint kept earlier (signed note)")
    consistency.add_argument("new", type=Path, metavar="NEW", help="the later checkpoint (signed note)")
    consistency.add_argument("--proof", type=Path, required=True, metavar="FILE", help="GET /ledger/consistency JSON")
    consistency.add_argument("--public-key", required=True, metavar="KEY", help="the trusted server public key")
    consistency.set_defaults(run=run_consistency)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def _failed(exc: VerificationError) -> int:
    where = f" at seq {exc.seq}" if exc.seq is not None else ""
    print(f"FAILED{where}: {exc.reason}: {exc.message}")
    return 1


def trusted_public_keys(args: argparse.Namespace, settings: Settings) -> dict[str, Ed25519PublicKey]:
    """Return ``--public-key`` if given, else the public half of the server key in ``state_dir``."""
    if args.public_key:
        return read_public_keys(args.public_key)
    key = load_server_key(settings.state_dir / SERVER_KEY_FILENAME)
    return {key.kid: key.public_key()}


def open_configured_store(settings: Settings) -> Store:
    """Open the store named by the settings (SPEC §9 ``storage.url``)."""
    return open_store(settings.storage_url(), sqlite_synchronous=settings.storage.sqlite_synchronous)


def run_verify(args: argparse.Namespace) -> int:
    """Audit the ledger from seq 0; exit 1 naming the first bad seq."""
    settings = load_settings(args.config)
    public_keys = trusted_public_keys(args, settings)
    since_note = _read(args.since) if args.since else None
    store = open_configured_store(settings)
    try:
        # (1) The checkpoints to hold the ledger to: signed by a trusted key, for this log.
        since = verify_signed_checkpoint(since_note, public_keys, origin=settings.server_id) if since_note else None
        stored = store.latest_checkpoint()
        latest = verify_signed_checkpoint(stored.note, public_keys, origin=settings.server_id) if stored else None
        # (2) Every receipt, its signature and link; the roots at the checkpoints' sizes.
        progress = Progress("verify", store.ledger_size())
        report = audit_entries(
            store.iter_entries(),
            LedgerAuditor(public_keys, log_id=settings.server_id),
            root_sizes={c.size for c in (since, latest) if c is not None},
            workers=max(0, args.workers),
            progress=progress.update,
        )
        progress.close(report.size)
        # (3) The roots: the checkpoints', and the stored nodes' that serve every proof.
        for checkpoint, label in ((latest, "the latest stored checkpoint"), (since, "the --since checkpoint")):
            if checkpoint is not None:
                _check_root(report, checkpoint, label)
        if store.tree_root(report.size) != report.root:
            raise VerificationError(
                "tree_mismatch", "the stored Merkle nodes disagree with the receipts: proofs served would fail"
            )
    except VerificationError as exc:
        return _failed(exc)
    finally:
        store.close()
    print(f"OK {report.size} receipts verified; head={report.head} root={report.root.hex()}")
    if latest is not None:
        print(f"OK latest checkpoint (size {latest.size}) matches the receipts")
    else:
        print("no checkpoint stored yet (GET /ledger/checkpoint or `ledger checkpoint` signs one)")
    if since is not None:
        print(f"OK consistent with the --since checkpoint (size {since.size}): the ledger was not rewritten")
    return 0


def _check_root(report: AuditReport, checkpoint: Checkpoint, label: str) -> None:
    if checkpoint.size > report.size:
        raise VerificationError(
            "checkpoint_ahead",
            f"{label} covers {checkpoint.size} receipts but the ledger holds {report.size}: receipts were removed",
            seq=report.size,
        )
    if report.roots[checkpoint.size] != checkpoint.root:
        raise VerificationError(
            "root_mismatch",
            f"the first {checkpoint.size} receipts are not those {label} covers: the ledger was rewritten before"
            f" seq {checkpoint.size}",
        )


def run_checkpoint(args: argparse.Namespace) -> int:
    """Print a signed checkpoint covering every receipt committed so far."""
    from openexec_mcp.ledger.checkpoints import Ledger

    settings = load_settings(args.config)
    server_key = load_server_key(settings.state_dir / SERVER_KEY_FILENAME)
    store = open_configured_store(settings)
    try:
        checkpoint = Ledger(store, server_key, settings.server_id).checkpoint()
    except VerificationError as exc:
        return _failed(exc)
    finally:
        store.close()
    print(checkpoint.note, end="")
    return 0


def _parse_proof(text: bytes) -> tuple[int, int, list[bytes]]:
    try:
        document = json.loads(text)
        sizes = (document["from"], document["to"])
        hashes = [b64decode_strict(value) for value in document["proof"]]
    except (ValueError, KeyError, TypeError, MalformedInputError):
        raise VerificationError("malformed_proof", 'the proof must be {"from", "to", "proof": [base64]}') from None
    if not all(type(size) is int for size in sizes):
        raise VerificationError("malformed_proof", "'from' and 'to' must be integers")
    return sizes[0], sizes[1], hashes


def run_consistency(args: argparse.Namespace) -> int:
    """Check offline that checkpoint NEW extends checkpoint OLD; exit 1 if not."""
    public_keys = read_public_keys(args.public_key)
    old_note, new_note, proof_text = _read(args.old), _read(args.new), _read(args.proof)
    try:
        # (1) Both checkpoints signed by the trusted key, for the same log.
        old = verify_signed_checkpoint(old_note, public_keys)
        new = verify_signed_checkpoint(new_note, public_keys, origin=old.origin)
        # (2) The proof is for these two sizes; (3) it leads from the old root to the new one.
        old_size, new_size, proof = _parse_proof(proof_text)
        if (old_size, new_size) != (old.size, new.size):
            raise VerificationError(
                "size_mismatch",
                f"the proof is from {old_size} to {new_size}, the checkpoints are {old.size} and {new.size}",
            )
        verify_checkpoint_consistency(old, new, proof)
    except VerificationError as exc:
        return _failed(exc)
    print(f"OK checkpoint {new.size} of {new.origin} extends checkpoint {old.size}: nothing before was rewritten")
    return 0
