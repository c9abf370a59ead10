"""The witness's memory: the latest cosigned checkpoint of each log, and evidence of misbehaviour (SPEC §14).

One SQLite file (WAL, ``synchronous=FULL``) with two tables:

- ``latest(origin PK, size, root, note, cosignature, updated_at)``: the latest checkpoint cosigned
  per origin (the note as the log signed it, and the cosignature line returned for it).
- ``evidence(id, origin, received_at, reason, old_size, stored_size, stored_root, size, root, request)``:
  every request carrying a valid log signature that contradicts what was cosigned before (a fork:
  same size and another root, or a consistency proof that does not verify). Kept forever.

:meth:`WitnessState.add_checkpoint` runs each submission in one ``BEGIN IMMEDIATE`` transaction,
so checking ``old`` against the stored size, verifying the proof, signing and saving are atomic
across threads and processes (the race c2sp.org/tlog-witness describes cannot roll the state
back); the update is also a compare-and-swap on the stored size, and the cosignature is returned
only after the commit.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from openexec_mcp.core.tlog.cosignature import CheckpointBody
from openexec_mcp.core.tlog.merkle import EMPTY_ROOT, verify_consistency
from openexec_mcp.errors import VerificationError

__all__ = ["Latest", "Verdict", "WitnessState"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS latest (
    origin TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    note TEXT NOT NULL,
    cosignature TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS evidence (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    origin TEXT NOT NULL,
    received_at REAL NOT NULL,
    reason TEXT NOT NULL,
    old_size INTEGER NOT NULL,
    stored_size INTEGER NOT NULL,
    stored_root BLOB,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    request BLOB NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Latest:
    """The latest checkpoint cosigned for one origin.

    Attributes:
        origin: The log's origin line.
        size: Its tree size.
        root: Its 32-byte root hash.
        note: The checkpoint as the log signed it (its signature lines included).
        cosignature: The cosignature line returned for it.
    """

    origin: str
    size: int
    root: bytes
    note: str
    cosignature: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one submission.

    Attributes:
        status: ``cosigned``, ``conflict`` (``old`` is not the stored size), or ``inconsistent``.
        stored_size: The size of the latest cosigned checkpoint after the call.
        cosignature: The cosignature line when ``cosigned``.
        reason: Why, when not cosigned.
        evidence: True when the request was recorded as evidence of a fork.
    """

    status: Literal["cosigned", "conflict", "inconsistent"]
    stored_size: int
    cosignature: str | None = None
    reason: str | None = None
    evidence: bool = False


class WitnessState:
    """The witness's SQLite state.

    Args:
        path: The database file (created with its tables when missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=30000")
        return db

    def _lock(self, origin: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(origin, threading.Lock())

    def latest(self, origin: str) -> Latest | None:
        """Return the latest cosigned checkpoint of ``origin``, or None."""
        db = self._connect()
        try:
            row = db.execute("SELECT size, root, note, cosignature FROM latest WHERE origin = ?", (origin,)).fetchone()
        finally:
            db.close()
        return None if row is None else Latest(origin, row[0], bytes(row[1]), row[2], row[3])

    def evidence_count(self, origin: str | None = None) -> int:
        """Return how many fork attempts were recorded (for ``origin``, or for every log)."""
        db = self._connect()
        try:
            if origin is None:
                return int(db.execute("SELECT count(*) FROM evidence").fetchone()[0])
            return int(db.execute("SELECT count(*) FROM evidence WHERE origin = ?", (origin,)).fetchone()[0])
        finally:
            db.close()

    def add_checkpoint(
        self,
        old: int,
        proof: tuple[bytes, ...],
        checkpoint: CheckpointBody,
        note: str,
        request: bytes,
        cosign: Callable[[], str],
    ) -> Verdict:
        """Check a log-signed checkpoint against the stored one and cosign it if it extends it.

        Steps, in one write transaction (c2sp.org/tlog-witness §add-checkpoint): (1) ``old``
        must be the stored size (0 when none), else ``conflict``; a checkpoint of the stored
        size with another root is recorded as evidence even then; (2) a size-0 checkpoint must
        have the empty root, an ``old`` of 0 an empty proof; (3) ``old == size`` needs the stored
        root, else the proof must verify from the stored root (RFC 6962 §2.1.2); a failure in (3)
        is recorded as evidence; (4) sign, save by compare-and-swap, commit, and only then return.

        Args:
            old: The request's old size (already checked ``<= checkpoint.size``).
            proof: The consistency proof hashes.
            checkpoint: The parsed checkpoint (its log signature already verified).
            note: The checkpoint note as submitted.
            request: The raw request body, kept as evidence.
            cosign: Returns the cosignature line for the checkpoint (called inside the transaction).

        Raises:
            sqlite3.Error: The database fails; nothing was cosigned.
        """
        with self._lock(checkpoint.origin):
            db = self._connect()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    verdict = self._decide(db, old, proof, checkpoint, note, request, cosign)
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
                return verdict
            finally:
                db.close()

    def _decide(
        self,
        db: sqlite3.Connection,
        old: int,
        proof: tuple[bytes, ...],
        checkpoint: CheckpointBody,
        note: str,
        request: bytes,
        cosign: Callable[[], str],
    ) -> Verdict:
        row = db.execute("SELECT size, root FROM latest WHERE origin = ?", (checkpoint.origin,)).fetchone()
        stored_size, stored_root = (0, None) if row is None else (int(row[0]), bytes(row[1]))

        def evidence(reason: str) -> None:
            db.execute(
                "INSERT INTO evidence (origin, received_at, reason, old_size, stored_size, stored_root, size, root,"
                " request) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    checkpoint.origin,
                    time.time(),
                    reason,
                    old,
                    stored_size,
                    stored_root,
                    checkpoint.size,
                    checkpoint.root,
                    request,
                ),
            )

        # (1) The client must know what was cosigned last.
        if old != stored_size:
            if stored_root is not None and checkpoint.size == stored_size and checkpoint.root != stored_root:
                evidence("same size as the cosigned checkpoint, another root")
                return Verdict("conflict", stored_size, reason="fork", evidence=True)
            return Verdict("conflict", stored_size, reason=f"old size {old} is not {stored_size}")
        # (2) The empty tree.
        if checkpoint.size == 0 and checkpoint.root != EMPTY_ROOT:
            return Verdict("inconsistent", stored_size, reason="a size-0 checkpoint must have the empty root")
        if old == 0 and proof:
            return Verdict("inconsistent", stored_size, reason="a proof from size 0 must be empty")
        # (3) Consistency with the stored checkpoint.
        if stored_root is not None and old > 0:
            if old == checkpoint.size and (proof or checkpoint.root != stored_root):
                reason = "same size as the cosigned checkpoint, another root" if not proof else "non-empty proof"
                if checkpoint.root != stored_root:
                    evidence(reason)
                return Verdict("inconsistent", stored_size, reason=reason, evidence=checkpoint.root != stored_root)
            if old < checkpoint.size:
                try:
                    verify_consistency(old, checkpoint.size, proof, stored_root, checkpoint.root)
                except VerificationError as exc:
                    evidence(f"consistency proof from {old} does not verify: {exc.reason}")
                    return Verdict("inconsistent", stored_size, reason=exc.reason, evidence=True)
        # (4) Cosign, then move forward by compare-and-swap.
        line = cosign()
        now = time.time()
        if row is None:
            cursor = db.execute(
                "INSERT INTO latest (origin, size, root, note, cosignature, updated_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (origin) DO NOTHING",
                (checkpoint.origin, checkpoint.size, checkpoint.root, note, line, now),
            )
        else:
            cursor = db.execute(
                "UPDATE latest SET size = ?, root = ?, note = ?, cosignature = ?, updated_at = ?"
                " WHERE origin = ? AND size = ? AND root = ?",
                (checkpoint.size, checkpoint.root, note, line, now, checkpoint.origin, stored_size, stored_root),
            )
        if cursor.rowcount != 1:  # unreachable under BEGIN IMMEDIATE; never cosign on a lost race
            raise sqlite3.OperationalError("the stored checkpoint moved during the transaction")
        return Verdict("cosigned", checkpoint.size, cosignature=line)
