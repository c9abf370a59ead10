"""``openexec-mcp ledger ...``: the ledger of receipts (SPEC §7, §9).

Audit and checkpoints live in :mod:`~openexec_mcp.cli.ledger_audit` (``verify``, ``checkpoint``,
``consistency``), export and runs in :mod:`~openexec_mcp.cli.ledger_runs` (``export``,
``timeline``, ``replay``); this module registers them and the nonce-table operations.
"""

from __future__ import annotations

import argparse
from typing import Any

from openexec_mcp.cli import bundle, ledger_audit, ledger_runs
from openexec_mcp.config import load_settings
from openexec_mcp.store import open_store


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``ledger`` command group."""
    parser = commands.add_parser("ledger", help="the ledger of receipts")
    sub = parser.add_subparsers(dest="ledger_command", required=True, metavar="SUBCOMMAND")
    ledger_audit.register(sub, common)
    ledger_runs.register(sub, common)
    bundle.register_ledger(sub, common)  # SPEC §14
    register_operations(sub, common)


# -- operations on the nonce table (SPEC §4): resolve, prune-nonces -------------------------------


def register_operations(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``ledger resolve`` and ``ledger prune-nonces``."""
    resolve = sub.add_parser(
        "resolve",
        parents=[common],
        help="decide an indeterminate call (re-run it, or record it as failed)",
        description="Record an operator's decision on a call cut off mid-run (receipt status indeterminate). "
        "The decision gets its own receipt; retries of the call's nonce then replay it.",
    )
    resolve.add_argument("exec_id", metavar="EXEC_ID", help="exec_id of the indeterminate receipt")
    decision = resolve.add_mutually_exclusive_group(required=True)
    decision.add_argument(
        "--rerun", action="store_true", help="run the recorded call once more (actions declared idempotent=True only)"
    )
    decision.add_argument(
        "--mark-failed", action="store_true", help="record it as failed (error_code operator_marked_failed)"
    )
    resolve.set_defaults(run=run_resolve)
    prune = sub.add_parser(
        "prune-nonces",
        parents=[common],
        help="delete nonce records older than nonce.retention_seconds",
        description="Delete finished nonce records older than the retention horizon "
        "(never running or indeterminate ones). The ledger keeps every receipt. Running servers also do this hourly.",
    )
    prune.set_defaults(run=run_prune_nonces)


def run_resolve(args: argparse.Namespace) -> int:
    """Resolve one indeterminate call; exit 0 when the decision is recorded, 2 when refused."""
    import anyio

    from openexec_mcp.ledger.resolve import resolve_indeterminate
    from openexec_mcp.runtime import build_runtime

    settings = load_settings(args.config)
    runtime = build_runtime(settings, serving=False)  # beside live servers: no start-up recovery
    try:
        decision = "rerun" if args.rerun else "mark_failed"
        resolution = anyio.run(resolve_indeterminate, runtime.gate, args.exec_id, decision)
    finally:
        runtime.close()
    entry = resolution.entry
    print(
        f"RESOLVED {resolution.original_exec_id} by {resolution.decision}: status={resolution.status}"
        f" error_code={resolution.error_code} exec_id={entry.exec_id} seq={entry.seq} receipt_hash={entry.receipt_hash}"
    )
    return 0


def run_prune_nonces(args: argparse.Namespace) -> int:
    """Prune nonce records past the retention horizon; print how many went."""
    from openexec_mcp.core.clock import utc_now
    from openexec_mcp.ledger.retention import prune_nonces, retention_horizon

    settings = load_settings(args.config)
    retention = settings.nonce.retention_seconds
    now = utc_now()
    store = open_store(settings.storage_url(), sqlite_synchronous=settings.storage.sqlite_synchronous)
    try:
        deleted = prune_nonces(store, retention_seconds=retention, now=now)
        size = store.ledger_size()
    finally:
        store.close()
    print(
        f"pruned {deleted} nonce record(s) finished before {retention_horizon(now, retention)}"
        f" (retention {retention} s); the ledger keeps all {size} receipts"
    )
    return 0
