"""``openexec-mcp ledger export | timeline | replay``: the ledger as data, as a run's story, as a re-run check.

- ``export [--run RUN_ID] [--since SEQ] [--out FILE]``: JSONL, one
  ``{"seq", "receipt_hash", "receipt"}`` object a line, in ``seq`` order (SPEC §9), for a SIEM.
  ``receipt`` is the stored envelope verbatim (its RFC 8785 text), so each line re-hashes to its
  ``receipt_hash``.
- ``timeline RUN_ID``: the run's attempts in order as a table (seq, time, action, status,
  approval method, error code), read from the receipts.
- ``replay RUN_ID``: see :mod:`openexec_mcp.ledger.replay`.

Runs are scoped by tenant. Clients choose run ids, so two tenants can use one: a run is
``(tenant, run_id)``. Each command takes ``--tenant TENANT`` (only that tenant's receipts); without
it, every tenant's receipts of the run are shown, the title names the tenant, and a run shared by
several tenants says so on stderr and gets a TENANT column (``export`` lines carry the tenant in
each receipt).

Export and replay draw progress on stderr when it is a terminal.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from openexec_mcp.cli.ledger_audit import open_configured_store, trusted_public_keys
from openexec_mcp.cli.progress import Progress
from openexec_mcp.config import load_settings
from openexec_mcp.core.canonical import json_object
from openexec_mcp.errors import ConfigError
from openexec_mcp.ledger.replay import decode_body, replay_run

__all__ = ["format_table", "register", "run_export", "run_replay", "run_timeline"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``ledger export``, ``ledger timeline`` and ``ledger replay``."""
    export = sub.add_parser("export", parents=[common], help="write receipts as JSONL (seq, receipt_hash, receipt)")
    export.add_argument("--run", dest="run_filter", metavar="RUN_ID", help="only this run's receipts")
    export.add_argument("--tenant", metavar="TENANT", help="only this tenant's receipts")
    export.add_argument("--since", type=int, default=0, metavar="SEQ", help="start at this seq (default 0)")
    export.add_argument("--out", type=Path, metavar="FILE", help="write here instead of stdout")
    export.set_defaults(run=run_export)
    timeline = sub.add_parser("timeline", parents=[common], help="a run's attempts in order, as a table")
    timeline.add_argument("run_id", metavar="RUN_ID")
    timeline.add_argument("--tenant", metavar="TENANT", help="only this tenant's calls of the run (default: all)")
    timeline.set_defaults(run=run_timeline)
    replay = sub.add_parser(
        "replay", parents=[common], help="re-run a run's read-only calls and compare their result hashes",
        description="Re-run the recorded calls of read_only actions against their recorded payloads, without "
        "approvals, nonces or receipts; report every result whose hash differs from the receipt's result_hash. "
        "Calls of side-effecting actions are listed, not re-run.",
    )  # fmt: skip
    replay.add_argument("run_id", metavar="RUN_ID")
    replay.add_argument("--tenant", metavar="TENANT", help="only this tenant's calls of the run (default: all)")
    replay.add_argument("--public-key", metavar="KEY", help="trusted server public key (default: the key in state_dir)")
    replay.set_defaults(run=run_replay)


def run_export(args: argparse.Namespace) -> int:
    """Write the JSONL export; exit 0."""
    if args.since < 0:
        raise ConfigError("--since must be a seq, 0 or more")
    settings = load_settings(args.config)
    store = open_configured_store(settings)
    try:
        out: TextIO = sys.stdout if args.out is None else args.out.open("w", encoding="utf-8")
    except OSError as exc:
        store.close()
        raise ConfigError(f"cannot write {args.out}: {exc.strerror}") from None
    whole = args.run_filter is None and args.tenant is None
    progress = Progress("export", max(0, store.ledger_size() - args.since) if whole else None)
    count = 0
    tenants: set[str] = set()
    try:
        for entry in store.iter_entries(args.since, run_id=args.run_filter, tenant_id=args.tenant):
            tenants.add(entry.tenant_id)
            # The stored envelope is canonical JSON already: embed it as it is.
            out.write(f'{{"seq":{entry.seq},"receipt_hash":"{entry.receipt_hash}","receipt":{entry.envelope}}}\n')
            count += 1
            progress.update(count)
    finally:
        progress.close(count)
        store.close()
        if out is not sys.stdout:
            out.close()
    if args.run_filter is not None:
        _note_shared_run(args.run_filter, tenants)
    return 0


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Return a plain-text table: columns padded to their widest cell, two spaces apart."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
             for line in (header, *rows)]  # fmt: skip
    return "\n".join(lines)


def run_timeline(args: argparse.Namespace) -> int:
    """Print a run's receipts as a table; exit 2 when the ledger holds none for it."""
    settings = load_settings(args.config)
    store = open_configured_store(settings)
    try:
        rows: list[list[str]] = []
        tenants: list[str] = []
        for entry in store.iter_entries(run_id=args.run_id, tenant_id=args.tenant):
            body = decode_body(entry.envelope)
            method = (json_object(body.get("approval")) or {}).get("method")
            rows.append([
                str(entry.seq), str(body.get("started_at")), str(body.get("action")), str(body.get("status")),
                str(method or "-"), str(body.get("error_code") or "-"), str(body.get("exec_id")),
            ])  # fmt: skip
            tenants.append(entry.tenant_id)
    finally:
        store.close()
    if not rows:
        raise ConfigError(f"the ledger holds no receipt of run {args.run_id!r}{_of_tenant(args.tenant)}")
    header = ["SEQ", "TIME", "ACTION", "STATUS", "APPROVAL", "ERROR", "EXEC_ID"]
    if len(set(tenants)) > 1:
        header.append("TENANT")
        rows = [[*row, tenant] for row, tenant in zip(rows, tenants, strict=True)]
    print(f"run {args.run_id} of {_tenant_names(tenants)}: {len(rows)} attempt(s)")
    print(format_table(header, rows))
    _note_shared_run(args.run_id, set(tenants))
    return 0


def _of_tenant(tenant: str | None) -> str:
    return "" if tenant is None else f" of tenant {tenant!r}"


def _tenant_names(tenants: Sequence[str]) -> str:
    names = sorted(set(tenants))
    return f"tenant {names[0]}" if len(names) == 1 else f"tenants {', '.join(names)}"


def _note_shared_run(run_id: str, tenants: set[str]) -> None:
    """Say on stderr when a run id is shared by several tenants (their calls are unrelated)."""
    if len(tenants) > 1:
        print(
            f"openexec-mcp: note: run {run_id!r} is used by {len(tenants)} tenants ({', '.join(sorted(tenants))}); "
            "their calls are unrelated: pass --tenant to see one",
            file=sys.stderr,
        )


def run_replay(args: argparse.Namespace) -> int:
    """Re-run a run's read-only calls; exit 1 when a result (or a recorded payload) does not match."""
    from openexec_mcp.registry import load_registry

    settings = load_settings(args.config)
    public_keys = trusted_public_keys(args, settings)
    from openexec_mcp.builtins import build_builtin_actions

    registry = load_registry(settings.actions.modules, extra=build_builtin_actions(settings))
    store = open_configured_store(settings)
    progress = Progress("replay", None)
    try:
        report = replay_run(
            store, registry, public_keys, args.run_id, tenant_id=args.tenant,
            timeout_seconds=settings.limits.handler_timeout_seconds, progress=progress.update,
        )  # fmt: skip
    finally:
        progress.close()
        store.close()
    if not report.lines:
        raise ConfigError(f"the ledger holds no receipt of run {args.run_id!r}{_of_tenant(args.tenant)}")
    tenants = {line.tenant_id for line in report.lines}
    header, rows = ["SEQ", "ACTION", "STATUS", "VERDICT", "DETAIL"], [line.row() for line in report.lines]
    if len(tenants) > 1:
        header.insert(4, "TENANT")
        rows = [[*row[:4], line.tenant_id, *row[4:]] for row, line in zip(rows, report.lines, strict=True)]
    print(format_table(header, rows))
    print(
        f"{report.count('match')} re-run and matched, {report.count('differs')} differ, "
        f"{report.count('payload_mismatch')} payload mismatch, {report.count('error')} error, "
        f"{report.count('side_effects')} listed (side effects), {report.count('skipped')} skipped"
    )
    _note_shared_run(args.run_id, tenants)
    return 1 if report.failed else 0
