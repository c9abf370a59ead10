"""Ledger benchmarks (issue 4): full-audit speed, and proof and checkpoint cost as the ledger grows.

    python bench/ledger.py            # 100,000-receipt audit; tree figures at 10^3, 10^5, 10^6 leaves
    python bench/ledger.py --quick    # CI smoke: 2,000 receipts; 10^3 and 10^4 leaves (under 30 s)

Figures (printed as a markdown table, never asserted):

1. ``ledger verify`` over N real receipts (built through ``Store.append``, so the tree is kept as a
   server keeps it): receipts per second of the audit loop with signatures verified in line
   (one core) and on worker threads (the default), and of the whole command in a subprocess;
   against the raw Ed25519 verification rate of ``cryptography`` over the same signatures,
   measured in the same run (the physical limit of a full audit). Raw rate and audits alternate
   over three rounds and the best of each is compared. Goal: at least 80 % of it.
2. For ledgers of 10^3, 10^5 and 10^6 leaves (synthetic receipt hashes bulk-inserted, then the
   tree built by the store's one-time migration, which is timed too): the cost of an append (a
   signed receipt plus its tree nodes), of an inclusion proof, of a consistency proof, of a root,
   and of a checkpoint (root, consistency with the previous checkpoint, signature, save) and its
   share per append with one checkpoint per ``DEFAULT_CHECKPOINT_EVERY`` appends. Each should grow
   as O(log n): a constant number of queries, each reading O(log n) stored hashes.

Everything runs in process on SQLite files under a temporary directory that is deleted at the end.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from openexec_mcp.cli.ledger_audit import DEFAULT_WORKERS
from openexec_mcp.config import load_settings
from openexec_mcp.core.audit import LedgerAuditor
from openexec_mcp.core.encoding import pae
from openexec_mcp.core.receipt import RECEIPT_PAYLOAD_TYPE, ServerKey, SignedReceipt, sign_receipt
from openexec_mcp.ledger.audit import audit_entries
from openexec_mcp.ledger.checkpoints import DEFAULT_CHECKPOINT_EVERY, Ledger
from openexec_mcp.runtime import build_runtime
from openexec_mcp.store import open_store
from openexec_mcp.store.base import Store

Row = dict[str, str]
ROUNDS = 3


def row(figure: str, value: str, baseline: str = "", ratio: str = "", goal: str = "", met: str = "") -> Row:
    """One table row, with the fields of ``bench.harness.Row``."""
    return {"figure": figure, "value": value, "baseline": baseline, "ratio": ratio, "goal": goal, "met": met}


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def receipt_factory(
    key: ServerKey, log_id: str, policy_hash: str, counter: list[int]
) -> Callable[[int, str | None], SignedReceipt]:
    """Signed receipts shaped like a real ``echo`` call's."""

    def make(seq: int, prev: str | None) -> SignedReceipt:
        counter[0] += 1
        stamp = f"2025-01-01T00:00:00.{seq % 1000:03d}Z"
        body = {
            "v": 1,
            "exec_id": f"{counter[0]:032x}",
            "seq": seq,
            "prev": prev,
            "log_id": log_id,
            "tenant_id": "default",
            "action": "echo",
            "action_hash": f"{seq:064x}",
            "nonce": f"bench-{seq:012d}",
            "run_id": "bench",
            "status": "executed",
            "error_code": None,
            "approval": {"method": "auto", "approval_id": None, "kid": None, "issued_by": None, "artifact_hash": None},
            "result_hash": f"{seq + 1:064x}",
            "original_exec_id": None,
            "policy_hash": policy_hash,
            "started_at": stamp,
            "finished_at": stamp,
            "server": {"name": "openexec-mcp", "version": "bench"},
        }
        return sign_receipt(body, key)

    return make


# -- 1. the full audit --------------------------------------------------------------------------


def raw_verify_rate(store: Store, key: ServerKey, sample: int) -> float:
    """Ed25519 verifications per second by ``cryptography`` over the ledger's own signatures."""
    jobs = []
    for entry in store.iter_entries():
        envelope = json.loads(entry.envelope)
        payload = base64.b64decode(envelope["payload"])
        jobs.append((base64.b64decode(envelope["signatures"][0]["sig"]), pae(RECEIPT_PAYLOAD_TYPE, payload)))
        if len(jobs) >= sample:
            break
    public_key = key.public_key()
    begin = time.perf_counter()
    for signature, message in jobs:
        public_key.verify(signature, message)
    return len(jobs) / (time.perf_counter() - begin)


def audit_figures(root: Path, receipts: int) -> list[Row]:
    state_dir = root / "audit"
    settings = load_settings(None, state_dir=state_dir, mode="demo", storage={"sqlite_synchronous": "normal"})
    runtime = build_runtime(settings)
    try:
        progress(f"ledger: appending {receipts:,} signed receipts ...")
        begin = time.perf_counter()
        make = receipt_factory(runtime.server_key, settings.server_id, runtime.policy.policy_hash, [0])
        for _ in range(receipts):
            runtime.store.append(make, tenant_id="default", run_id="bench", action="echo")
        fill_seconds = time.perf_counter() - begin
        runtime.ledger.checkpoint()
        key, server_id = runtime.server_key, settings.server_id
    finally:
        runtime.close()
    store = open_store(settings.storage_url(), sqlite_synchronous="normal")
    trusted = {key.kid: key.public_key()}
    raws: list[float] = []
    rates: dict[int, list[float]] = {0: [], DEFAULT_WORKERS: []}
    try:
        # Interleaved rounds, best of each: the machine's noise hits both sides alike.
        for round_number in range(ROUNDS):
            raws.append(raw_verify_rate(store, key, min(receipts, 20_000)))
            for workers in rates:
                progress(f"ledger: round {round_number + 1}/{ROUNDS}, audit with {workers} worker thread(s) ...")
                begin = time.perf_counter()
                report = audit_entries(store.iter_entries(), LedgerAuditor(trusted, server_id), workers=workers)
                rates[workers].append(report.size / (time.perf_counter() - begin))
    finally:
        store.close()
    progress("ledger: `openexec-mcp ledger verify` in a subprocess ...")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENEXEC_", "CLAWSHIELD_"))}
    env.update(OPENEXEC_STATE_DIR=str(state_dir), OPENEXEC_STORAGE__SQLITE_SYNCHRONOUS="normal")
    begin = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "openexec_mcp", "ledger", "verify"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    command_seconds = time.perf_counter() - begin
    if completed.returncode != 0:
        raise RuntimeError(f"ledger verify failed: {completed.stdout} {completed.stderr}")
    raw, inline, threaded = max(raws), max(rates[0]), max(rates[DEFAULT_WORKERS])
    goal = "≥ 80 %"
    rows = [
        row(
            f"audit loop, signatures in line (1 core), {receipts:,} receipts",
            f"{inline:,.0f} receipts/s",
            f"{raw:,.0f} Ed25519 verify/s",
            f"{inline / raw:.0%}",
            goal,
            "yes" if inline >= 0.8 * raw else "no",
        ),
        row(
            f"audit loop, {DEFAULT_WORKERS} verify thread(s) (the default), {receipts:,} receipts",
            f"{threaded:,.0f} receipts/s",
            f"{raw:,.0f} Ed25519 verify/s",
            f"{threaded / raw:.0%}",
            goal,
            "yes" if threaded >= 0.8 * raw else "no",
        ),
        row(
            f"`ledger verify` command, {receipts:,} receipts (start-up included)",
            f"{receipts / command_seconds:,.0f} receipts/s",
            f"{raw:,.0f} Ed25519 verify/s",
            f"{receipts / command_seconds / raw:.0%}",
        ),
        row(f"raw Ed25519 verify rate, each of {ROUNDS} rounds", " / ".join(f"{value:,.0f}" for value in raws)),
        row(
            f"building the ledger through Store.append ({receipts:,} receipts)",
            f"{fill_seconds / receipts * 1e6:,.0f} µs/append",
        ),
    ]
    return rows


# -- 2. proofs and checkpoints as the ledger grows ----------------------------------------------------


def bulk_ledger(path: Path, size: int) -> float:
    """Create a store file holding ``size`` synthetic leaves, then open it (the tree is built); return that time."""
    open_store(f"sqlite:///{path}", sqlite_synchronous="normal").close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO ledger (seq, exec_id, receipt_hash, envelope, tenant_id, run_id, action, status)"
        " VALUES (?, ?, ?, '{}', 'default', 'bench', 'echo', 'executed')",
        ((seq, f"bulk-{seq}", random.randbytes(32).hex()) for seq in range(size)),
    )
    db.execute("COMMIT")
    db.close()
    begin = time.perf_counter()
    open_store(f"sqlite:///{path}", sqlite_synchronous="normal").close()
    return time.perf_counter() - begin


def mean_micros(action: Callable[[], Any], count: int) -> float:
    samples = []
    for _ in range(count):
        begin = time.perf_counter()
        action()
        samples.append(time.perf_counter() - begin)
    return statistics.fmean(samples) * 1e6


def measure_tree(
    store: Store, ledger: Ledger, make: Callable[[int, str | None], SignedReceipt], samples: int
) -> dict[str, float]:
    """Mean costs in µs on one store: append, inclusion proof, consistency proof, root, checkpoint."""

    def append() -> None:
        store.append(make, tenant_id="default", run_id="bench", action="echo")

    def append_and_checkpoint() -> None:
        append()
        ledger.sign_checkpoint(store.ledger_size())

    ledger.checkpoint()
    costs = {"append": mean_micros(append, samples)}
    size = store.ledger_size()
    costs["inclusion"] = mean_micros(lambda: ledger.inclusion_proof(random.randrange(size), size), samples)
    costs["consistency"] = mean_micros(lambda: ledger.consistency(random.randrange(1, size), size), samples)
    costs["root"] = mean_micros(lambda: store.tree_root(size), samples)
    costs["checkpoint"] = mean_micros(append_and_checkpoint, max(5, samples // 4)) - costs["append"]
    costs["proof_length"] = len(ledger.inclusion_proof(size // 3, size))
    return costs


def tree_figures(root: Path, sizes: list[int], samples: int) -> list[Row]:
    key = ServerKey.from_private_key(Ed25519PrivateKey.generate())
    rows: list[Row] = []
    for size in sizes:
        progress(f"ledger: tree figures at {size:,} leaves ...")
        path = root / f"tree-{size}.db"
        backfill_seconds = bulk_ledger(path, size)
        store = open_store(f"sqlite:///{path}", sqlite_synchronous="normal")
        try:
            costs = measure_tree(
                store, Ledger(store, key, "bench"), receipt_factory(key, "bench", "0" * 64, [size]), samples
            )
        finally:
            store.close()
        checkpoint = costs["checkpoint"]
        rows += [
            row(f"{size:,} leaves: append (signed receipt + tree nodes)", f"{costs['append']:,.0f} µs"),
            row(
                f"{size:,} leaves: inclusion proof ({costs['proof_length']:.0f} hashes)",
                f"{costs['inclusion']:,.0f} µs",
            ),
            row(f"{size:,} leaves: consistency proof", f"{costs['consistency']:,.0f} µs"),
            row(f"{size:,} leaves: tree root", f"{costs['root']:,.0f} µs"),
            row(
                f"{size:,} leaves: checkpoint (root, consistency, sign, save)",
                f"{checkpoint:,.0f} µs",
                ratio=f"{checkpoint / DEFAULT_CHECKPOINT_EVERY:,.1f} µs per append at 1 per {DEFAULT_CHECKPOINT_EVERY}",
            ),
            row(f"{size:,} leaves: one-time tree migration at open", f"{backfill_seconds:,.2f} s"),
        ]
    return rows


def figures(*, quick: bool, root: Path) -> list[Row]:
    """Every figure of this benchmark (``bench/run.py`` can call this with a workspace directory)."""
    logging.getLogger("openexec_mcp").setLevel(logging.ERROR)  # the demo-mode warning is expected
    receipts = 2_000 if quick else 100_000
    sizes = [10**3, 10**4] if quick else [10**3, 10**5, 10**6]
    return audit_figures(root, receipts) + tree_figures(root, sizes, 50 if quick else 300)


def render(rows: list[Row]) -> str:
    header = ["figure", "value", "baseline", "ratio", "goal", "met"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r[h] for h in header) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI smoke mode: small ledgers, under 30 s")
    args = parser.parse_args(argv)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="openexec-bench-ledger-") as directory:
        rows = figures(quick=args.quick, root=Path(directory))
    print(render(rows))
    print(
        f"\n_{'quick smoke run' if args.quick else 'full run'} in {time.monotonic() - began:.0f} s, "
        f"{os.cpu_count()} cores, SQLite {sqlite3.sqlite_version}._"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
