"""``witnesses.db``: the checkpoint notes witnesses cosigned and their cosignature lines (SPEC §14).

One SQLite file in ``state_dir``, beside (not inside) the store, written only by
:class:`~openexec_mcp.ledger.witnessing.Witnessing`:

- ``checkpoints(size PK, root, note)``: each checkpoint at least one witness cosigned, as signed;
- ``cosignatures(size, witness, line, timestamp)``: the verified line each witness returned;
- ``witness_state(witness PK, size, updated_at)``: the size each witness last cosigned (only grows).

Read by ``GET /ledger/checkpoint``, ``GET /ledger/proof/...`` and ``ledger bundle``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from openexec_mcp.store.base import StoredCheckpoint

__all__ = ["WITNESSES_DB", "CosignatureStore"]

WITNESSES_DB: Final = "witnesses.db"
"""The file in ``state_dir`` holding collected cosignatures."""

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER PRIMARY KEY, root TEXT NOT NULL, note TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cosignatures (
    size INTEGER NOT NULL, witness TEXT NOT NULL, line TEXT NOT NULL, timestamp INTEGER NOT NULL,
    PRIMARY KEY (size, witness)
);
CREATE TABLE IF NOT EXISTS witness_state (witness TEXT PRIMARY KEY, size INTEGER NOT NULL, updated_at REAL NOT NULL);
"""


class CosignatureStore:
    """``witnesses.db``: checkpoint notes and the cosignature lines collected for them.

    Args:
        path: The SQLite file (created when missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def add(self, checkpoint: StoredCheckpoint, witness: str, line: str, timestamp: int) -> None:
        """Record that ``witness`` cosigned ``checkpoint`` with ``line``; its cosigned size moves to it."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT OR IGNORE INTO checkpoints (size, root, note) VALUES (?, ?, ?)",
                    (checkpoint.size, checkpoint.root, checkpoint.note),
                )
                self._db.execute(
                    "INSERT OR REPLACE INTO cosignatures (size, witness, line, timestamp) VALUES (?, ?, ?, ?)",
                    (checkpoint.size, witness, line, timestamp),
                )
                self._db.execute(
                    "INSERT INTO witness_state (witness, size, updated_at) VALUES (?, ?, ?) ON CONFLICT (witness)"
                    " DO UPDATE SET size = excluded.size, updated_at = excluded.updated_at"
                    " WHERE excluded.size >= witness_state.size",
                    (witness, checkpoint.size, time.time()),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def cosigned_size(self, witness: str) -> int | None:
        """Return the size ``witness`` last cosigned, or None."""
        with self._lock:
            row = self._db.execute("SELECT size FROM witness_state WHERE witness = ?", (witness,)).fetchone()
        return None if row is None else int(row[0])

    def lines(self, size: int, root_hex: str, witnesses: Sequence[str] | None = None) -> list[str]:
        """Return the cosignature lines collected for the checkpoint of ``size`` with ``root_hex``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT c.witness, c.line FROM cosignatures c JOIN checkpoints k ON k.size = c.size"
                " WHERE c.size = ? AND k.root = ? ORDER BY c.witness",
                (size, root_hex),
            ).fetchall()
        return [line for name, line in rows if witnesses is None or name in witnesses]

    def witnessed(self, quorum: int, witnesses: Sequence[str], min_size: int = 0) -> str | None:
        """Return the largest checkpoint (note with its cosignatures) cosigned by ``quorum`` of ``witnesses``.

        Args:
            quorum: Cosignatures needed.
            witnesses: The names that count.
            min_size: Only checkpoints of at least this size.
        """
        marks = ",".join("?" * len(witnesses)) or "NULL"
        with self._lock:
            row = self._db.execute(
                f"SELECT k.size, k.root FROM checkpoints k JOIN cosignatures c ON c.size = k.size"  # noqa: S608
                f" WHERE k.size >= ? AND c.witness IN ({marks}) GROUP BY k.size HAVING count(*) >= ?"
                " ORDER BY k.size DESC LIMIT 1",
                (min_size, *witnesses, quorum),
            ).fetchone()
            if row is None:
                return None
            note = self._db.execute("SELECT note FROM checkpoints WHERE size = ?", (row[0],)).fetchone()[0]
        return str(note) + "".join(self.lines(int(row[0]), str(row[1]), witnesses))
