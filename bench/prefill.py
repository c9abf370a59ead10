"""Pre-fill a state dir with a ledger of N real receipts, fast (for the scale figure).

How: ``build_runtime`` is run once on the state dir, exactly as ``openexec-mcp serve`` would
(it creates the server key, the SQLite schema, and yields the policy_hash and server_id). Then,
on a separate connection with ``synchronous=OFF`` and 10,000 rows per transaction, each of the N
calls gets what a real ``echo`` call leaves behind: a ``finished`` row in the nonce table and a
ledger row holding a receipt built from the SPEC §7 body fields, canonicalized and Ed25519-signed
with the server key by ``core.receipt.sign_receipt``, chained by ``prev``. Only the gate's
per-call transactions and fsyncs are skipped (that is what makes 10^6 rows take minutes, not
hours). Finally the store is opened once more through ``open_store``, so that whatever it derives
from the ledger at open (the Merkle tree nodes) is built here and not during a measurement.
``python -m openexec_mcp ledger verify`` accepts the result (``bench/run.py`` checks the smallest
size on every invocation).

Standalone: ``python bench/prefill.py STATE_DIR N``.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from openexec_mcp.config import load_settings
from openexec_mcp.core.action import compute_action_hash
from openexec_mcp.core.canonical import canonicalize, sha256_hex
from openexec_mcp.core.clock import format_timestamp
from openexec_mcp.core.receipt import sign_receipt
from openexec_mcp.gate.approvals import AUTO_APPROVAL
from openexec_mcp.gate.receipts import SERVER_INFO
from openexec_mcp.runtime import build_runtime
from openexec_mcp.store import open_store

BATCH_ROWS = 10_000
TENANT_ID = "default"


def prefill(state_dir: Path, size: int, *, progress: bool = False) -> float:
    """Write ``size`` executed ``echo`` calls into the store of ``state_dir``; return the seconds taken.

    The state dir must be new or empty: the ledger starts at ``seq`` 0.
    """
    begin = time.monotonic()
    settings = load_settings(None, state_dir=state_dir, mode="demo")
    runtime = build_runtime(settings)
    try:
        if runtime.store.ledger_size() != 0:
            raise RuntimeError(f"{state_dir} already holds a ledger")
        server_key, policy_hash, log_id = runtime.server_key, runtime.policy.policy_hash, settings.server_id
    finally:
        runtime.close()
    db_path = Path(settings.storage_url().removeprefix("sqlite:///"))
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    approval = dict(AUTO_APPROVAL)
    approval_text = canonicalize(approval).decode()
    run_id = "prefill:" + secrets.token_hex(8)
    moment = datetime.now(UTC) - timedelta(days=1)
    prev: str | None = None
    nonce_rows: list[tuple[object, ...]] = []
    ledger_rows: list[tuple[object, ...]] = []
    for seq in range(size):
        nonce = f"prefill-{seq:012d}"
        payload = {"msg": f"hello world {seq}"}
        result_bytes = canonicalize({"echo": payload})
        result_hash = sha256_hex(result_bytes)
        exec_id = secrets.token_hex(16)
        stamp = format_timestamp(moment + timedelta(milliseconds=seq))
        body = {
            "v": 1,
            "exec_id": exec_id,
            "tenant_id": TENANT_ID,
            "action": "echo",
            "action_hash": compute_action_hash("echo", payload, nonce),
            "nonce": nonce,
            "run_id": run_id,
            "started_at": stamp,
            "seq": seq,
            "prev": prev,
            "log_id": log_id,
            "status": "executed",
            "error_code": None,
            "approval": approval,
            "result_hash": result_hash,
            "original_exec_id": None,
            "policy_hash": policy_hash,
            "finished_at": stamp,
            "server": dict(SERVER_INFO),
        }
        receipt = sign_receipt(body, server_key)
        prev = receipt.receipt_hash
        nonce_rows.append(
            (
                TENANT_ID,
                nonce,
                "echo",
                body["action_hash"],
                exec_id,
                run_id,
                approval_text,
                stamp,
                "finished",
                "executed",
                result_bytes.decode(),
                result_hash,
                None,
                None,
                stamp,
            )
        )
        ledger_rows.append(
            (seq, exec_id, receipt.receipt_hash, receipt.canonical.decode(), TENANT_ID, run_id, "echo", "executed")
        )
        if len(ledger_rows) >= BATCH_ROWS or seq == size - 1:
            _flush(db, nonce_rows, ledger_rows)
            if progress:
                print(f"  prefill {state_dir.name}: {seq + 1:,}/{size:,}", file=sys.stderr, flush=True)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    complete_derived_state(state_dir)
    return time.monotonic() - begin


def complete_derived_state(state_dir: Path) -> None:
    """Open and close the store of ``state_dir``: it builds what it derives from the ledger at open."""
    settings = load_settings(None, state_dir=state_dir, mode="demo")
    open_store(settings.storage_url(), sqlite_synchronous="normal").close()


def _flush(db: sqlite3.Connection, nonce_rows: list[tuple[object, ...]], ledger_rows: list[tuple[object, ...]]) -> None:
    db.execute("BEGIN IMMEDIATE")
    db.executemany(
        "INSERT INTO nonces (tenant_id, nonce, action, action_hash, exec_id, run_id, approval, started_at, state,"
        " status, result, result_hash, error_code, error_message, finished_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        nonce_rows,
    )
    db.executemany(
        "INSERT INTO ledger (seq, exec_id, receipt_hash, envelope, tenant_id, run_id, action, status)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ledger_rows,
    )
    db.execute("COMMIT")
    nonce_rows.clear()
    ledger_rows.clear()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: prefill.py STATE_DIR N", file=sys.stderr)
        return 2
    seconds = prefill(Path(argv[0]), int(argv[1]), progress=True)
    print(json.dumps({"state_dir": argv[0], "size": int(argv[1]), "seconds": round(seconds, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
