"""The embedded SQLite backend (WAL, one file on disk).

One connection, serialised by a lock, in autocommit mode with explicit ``BEGIN IMMEDIATE``
transactions: a claim, an outcome-plus-receipt, or an append is each one write transaction, so a
crash leaves either all of it or none of it. ``synchronous=FULL`` (the default) makes a commit
durable across power loss before the handler runs; ``NORMAL`` survives a process crash but may
lose the last commits on power loss. Triggers make the ledger, its tree nodes and its checkpoints
append-only at the database level.

Opening a database made by an older version adds what it lacks, once: the ``request`` column of
the nonce table and the tree nodes of every receipt already in the ledger.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from openexec_mcp.core.clock import format_timestamp, utc_now
from openexec_mcp.core.nonce import NonceRecord
from openexec_mcp.core.tlog.merkle import EMPTY_ROOT
from openexec_mcp.core.tlog.subtrees import (
    Position,
    append_nodes,
    append_sibling_positions,
    backfill,
    range_hash,
    ranges_positions,
)
from openexec_mcp.errors import ConfigError, StoreUnavailableError
from openexec_mcp.store.base import (
    APPROVAL_CONSUMED,
    ApprovalAlreadyConsumed,
    ApprovalRequest,
    LedgerEntry,
    NonceClaim,
    Outcome,
    ReceiptFactory,
    StoredCheckpoint,
)

__all__ = ["SQLiteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nonces (
    tenant_id     TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    action        TEXT NOT NULL,
    action_hash   TEXT NOT NULL,
    exec_id       TEXT NOT NULL UNIQUE,
    run_id        TEXT NOT NULL,
    approval      TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('started', 'finished', 'indeterminate')),
    status        TEXT,
    result        TEXT,
    result_hash   TEXT,
    error_code    TEXT,
    error_message TEXT,
    finished_at   TEXT,
    request       TEXT,
    extra         TEXT,
    PRIMARY KEY (tenant_id, nonce)
);
CREATE INDEX IF NOT EXISTS nonces_state ON nonces (state);
CREATE INDEX IF NOT EXISTS nonces_finished_at ON nonces (finished_at);
CREATE TABLE IF NOT EXISTS consumed_approvals (
    approval_id TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    exec_id     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS approval_requests (
    request_id     TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL,
    action_hash    TEXT NOT NULL,
    action_request TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    expires_unix   REAL NOT NULL,
    UNIQUE (tenant_id, action_hash)
);
CREATE TABLE IF NOT EXISTS approval_artifacts (
    action_hash  TEXT NOT NULL,
    approval_id  TEXT NOT NULL,
    artifact     TEXT NOT NULL,
    submitted_at TEXT NOT NULL,
    PRIMARY KEY (action_hash, approval_id)
);
CREATE TABLE IF NOT EXISTS ledger (
    seq          INTEGER PRIMARY KEY,
    exec_id      TEXT NOT NULL UNIQUE,
    receipt_hash TEXT NOT NULL,
    envelope     TEXT NOT NULL,
    tenant_id    TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    action       TEXT NOT NULL,
    status       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_run ON ledger (run_id, seq);
CREATE TRIGGER IF NOT EXISTS ledger_no_update BEFORE UPDATE ON ledger
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS ledger_no_delete BEFORE DELETE ON ledger
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TABLE IF NOT EXISTS merkle_nodes (
    level INTEGER NOT NULL CHECK (level >= 1),
    idx   INTEGER NOT NULL CHECK (idx >= 0),
    hash  BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS merkle_nodes_no_update BEFORE UPDATE ON merkle_nodes
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS merkle_nodes_no_delete BEFORE DELETE ON merkle_nodes
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY CHECK (size >= 0),
    root TEXT NOT NULL,
    note TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS checkpoints_no_update BEFORE UPDATE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_delete BEFORE DELETE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
"""

_NONCE_COLUMNS = (
    "tenant_id, nonce, action, action_hash, exec_id, run_id, approval, started_at, state, status, "
    "result, result_hash, error_code, error_message, extra"
)
_REQUEST_COLUMNS = "request_id, tenant_id, action_hash, action_request, created_at, expires_at, expires_unix"
_LEDGER_COLUMNS = "seq, exec_id, receipt_hash, envelope, tenant_id, run_id, action, status"
# Retention (Store.prune_nonces): never 'started' rows; 'indeterminate' rows of older versions have no finished_at.
_PRUNE_FINISHED = "finished_at < ? AND state <> 'started'"
_PRUNE_LEGACY_INDETERMINATE = "finished_at IS NULL AND state = 'indeterminate' AND started_at < ?"
_PRUNE_BATCH = 1000


class SQLiteStore:
    """The :class:`~openexec_mcp.store.base.Store` protocol on one SQLite file.

    Args:
        path: The database file; its parent directory is created (mode 0700) if missing.
        synchronous: ``full`` (durable across power loss) or ``normal``.

    Raises:
        ConfigError: ``synchronous`` is not ``full`` or ``normal``.
        StoreUnavailableError: The file cannot be opened or initialised.
    """

    kind = "sqlite"

    def __init__(self, path: Path, *, synchronous: str = "full") -> None:
        if synchronous not in ("full", "normal"):
            raise ConfigError("storage.sqlite_synchronous must be 'full' or 'normal'")
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
            self._db.execute("PRAGMA busy_timeout=30000")
            _enable_wal(self._db)
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.executescript(_SCHEMA)
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailableError(f"cannot open SQLite database {path}: {exc}") from None

    def _migrate(self) -> None:
        """Bring a database of an older version up to date (idempotent; safe in several processes)."""
        for column in ("request", "extra"):
            if column not in {row[1] for row in self._db.execute("PRAGMA table_info(nonces)")}:
                try:
                    self._db.execute(f"ALTER TABLE nonces ADD COLUMN {column} TEXT")
                except sqlite3.OperationalError as exc:
                    if "duplicate column" not in str(exc):  # another process added it first
                        raise
        with self._transaction() as db:
            _backfill(db)

    # -- nonces ---------------------------------------------------------------------------------

    def get_nonce(self, tenant_id: str, nonce: str) -> NonceRecord | None:
        """See :meth:`Store.get_nonce`."""
        with self._guard():
            row = self._db.execute(
                f"SELECT {_NONCE_COLUMNS} FROM nonces WHERE tenant_id = ? AND nonce = ?", (tenant_id, nonce)
            ).fetchone()
        return None if row is None else NonceRecord(*row)

    def claim_nonce(self, claim: NonceClaim) -> NonceRecord | ApprovalAlreadyConsumed | None:
        """See :meth:`Store.claim_nonce`."""
        with self._transaction() as db:
            row = db.execute(
                f"SELECT {_NONCE_COLUMNS} FROM nonces WHERE tenant_id = ? AND nonce = ?",
                (claim.tenant_id, claim.nonce),
            ).fetchone()
            if row is not None:
                return NonceRecord(*row)
            if claim.approval_id is not None:
                used = db.execute(
                    "SELECT 1 FROM consumed_approvals WHERE approval_id = ?", (claim.approval_id,)
                ).fetchone()
                if used is not None:
                    return APPROVAL_CONSUMED
                db.execute(
                    "INSERT INTO consumed_approvals (approval_id, tenant_id, exec_id) VALUES (?, ?, ?)",
                    (claim.approval_id, claim.tenant_id, claim.exec_id),
                )
            db.execute(
                "DELETE FROM approval_requests WHERE tenant_id = ? AND action_hash = ?",
                (claim.tenant_id, claim.action_hash),
            )
            db.execute(
                "INSERT INTO nonces (tenant_id, nonce, action, action_hash, exec_id, run_id, approval,"
                " started_at, state, request, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'started', ?, ?)",
                (
                    claim.tenant_id, claim.nonce, claim.action, claim.action_hash, claim.exec_id,
                    claim.run_id, claim.approval, claim.started_at, claim.request, claim.extra,
                ),
            )  # fmt: skip
        return None

    def finish(self, tenant_id: str, nonce: str, outcome: Outcome, make_receipt: ReceiptFactory) -> LedgerEntry:
        """See :meth:`Store.finish`."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT run_id, action FROM nonces WHERE tenant_id = ? AND nonce = ? AND state = 'started'",
                (tenant_id, nonce),
            ).fetchone()
            if row is None:
                raise StoreUnavailableError("the nonce claim vanished before its outcome was recorded")
            db.execute(
                "UPDATE nonces SET state = ?, status = ?, result = ?, result_hash = ?, error_code = ?,"
                " error_message = ?, finished_at = ? WHERE tenant_id = ? AND nonce = ?",
                (
                    _finished_state(outcome), outcome.status, outcome.result, outcome.result_hash,
                    outcome.error_code, outcome.error_message, outcome.finished_at, tenant_id, nonce,
                ),
            )  # fmt: skip
            return self._append(db, make_receipt, tenant_id=tenant_id, run_id=row[0], action=row[1])

    def release_claim(self, tenant_id: str, nonce: str, exec_id: str, make_receipt: ReceiptFactory) -> LedgerEntry:
        """See :meth:`Store.release_claim`."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT run_id, action FROM nonces"
                " WHERE tenant_id = ? AND nonce = ? AND exec_id = ? AND state = 'started'",
                (tenant_id, nonce, exec_id),
            ).fetchone()
            if row is None:
                raise StoreUnavailableError("the nonce claim vanished before it was released")
            db.execute("DELETE FROM nonces WHERE tenant_id = ? AND nonce = ?", (tenant_id, nonce))
            db.execute("DELETE FROM consumed_approvals WHERE exec_id = ?", (exec_id,))
            return self._append(db, make_receipt, tenant_id=tenant_id, run_id=row[0], action=row[1])

    def recover_started(self, make_receipt: Callable[[NonceRecord], ReceiptFactory]) -> list[LedgerEntry]:
        """See :meth:`Store.recover_started`."""
        entries: list[LedgerEntry] = []
        recovered_at = format_timestamp(utc_now())
        with self._transaction() as db:
            rows = db.execute(f"SELECT {_NONCE_COLUMNS} FROM nonces WHERE state = 'started'").fetchall()
            for row in rows:
                record = NonceRecord(*row)
                db.execute(
                    "UPDATE nonces SET state = 'indeterminate', finished_at = ? WHERE tenant_id = ? AND nonce = ?",
                    (recovered_at, record.tenant_id, record.nonce),
                )
                entries.append(
                    self._append(
                        db, make_receipt(record), tenant_id=record.tenant_id, run_id=record.run_id,
                        action=record.action,
                    )
                )  # fmt: skip
        return entries

    def get_nonce_by_exec_id(self, exec_id: str) -> NonceRecord | None:
        """See :meth:`Store.get_nonce_by_exec_id`."""
        with self._guard():
            row = self._db.execute(f"SELECT {_NONCE_COLUMNS} FROM nonces WHERE exec_id = ?", (exec_id,)).fetchone()
        return None if row is None else NonceRecord(*row)

    def reclaim_indeterminate(
        self, tenant_id: str, nonce: str, exec_id: str, new_exec_id: str, started_at: str
    ) -> bool:
        """See :meth:`Store.reclaim_indeterminate`."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE nonces SET state = 'started', exec_id = ?, started_at = ?, finished_at = NULL"
                " WHERE tenant_id = ? AND nonce = ? AND exec_id = ? AND state = 'indeterminate'",
                (new_exec_id, started_at, tenant_id, nonce, exec_id),
            )
            return cursor.rowcount == 1

    def fail_indeterminate(
        self, tenant_id: str, nonce: str, exec_id: str, new_exec_id: str, outcome: Outcome, make_receipt: ReceiptFactory
    ) -> LedgerEntry | None:
        """See :meth:`Store.fail_indeterminate`."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT run_id, action FROM nonces"
                " WHERE tenant_id = ? AND nonce = ? AND exec_id = ? AND state = 'indeterminate'",
                (tenant_id, nonce, exec_id),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE nonces SET state = 'finished', exec_id = ?, status = ?, result = ?, result_hash = ?,"
                " error_code = ?, error_message = ?, finished_at = ? WHERE tenant_id = ? AND nonce = ?",
                (
                    new_exec_id, outcome.status, outcome.result, outcome.result_hash, outcome.error_code,
                    outcome.error_message, outcome.finished_at, tenant_id, nonce,
                ),
            )  # fmt: skip
            return self._append(db, make_receipt, tenant_id=tenant_id, run_id=row[0], action=row[1])

    def prune_nonces(self, finished_before: str) -> int:
        """See :meth:`Store.prune_nonces`."""
        deleted = 0
        for condition in (_PRUNE_FINISHED, _PRUNE_LEGACY_INDETERMINATE):
            while True:
                with self._transaction() as db:
                    count = db.execute(
                        "DELETE FROM nonces WHERE rowid IN"
                        f" (SELECT rowid FROM nonces WHERE {condition} LIMIT {_PRUNE_BATCH})",
                        (finished_before,),
                    ).rowcount
                deleted += count
                if count < _PRUNE_BATCH:
                    break
        with self._transaction() as db:
            db.execute(
                "DELETE FROM consumed_approvals WHERE NOT EXISTS"
                " (SELECT 1 FROM nonces WHERE nonces.exec_id = consumed_approvals.exec_id)"
            )
            db.execute("DELETE FROM approval_artifacts WHERE submitted_at < ?", (finished_before,))
        return deleted

    # -- approval inbox -------------------------------------------------------------------------

    def open_approval_request(self, request: ApprovalRequest, now_unix: float) -> ApprovalRequest:
        """See :meth:`Store.open_approval_request`."""
        with self._transaction() as db:
            db.execute("DELETE FROM approval_requests WHERE expires_unix < ?", (now_unix,))
            row = db.execute(
                f"SELECT {_REQUEST_COLUMNS} FROM approval_requests WHERE tenant_id = ? AND action_hash = ?",
                (request.tenant_id, request.action_hash),
            ).fetchone()
            if row is not None:
                return ApprovalRequest(*row)
            db.execute(
                f"INSERT INTO approval_requests ({_REQUEST_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    request.request_id, request.tenant_id, request.action_hash, request.action_request,
                    request.created_at, request.expires_at, request.expires_unix,
                ),
            )  # fmt: skip
        return request

    def list_approval_requests(self, now_unix: float, tenant_id: str | None = None) -> list[ApprovalRequest]:
        """See :meth:`Store.list_approval_requests`."""
        where, args = ("AND tenant_id = ?", (tenant_id,)) if tenant_id is not None else ("", ())
        with self._guard():
            rows = self._db.execute(
                f"SELECT {_REQUEST_COLUMNS} FROM approval_requests WHERE expires_unix >= ? {where}"
                " ORDER BY created_at, request_id",
                (now_unix, *args),
            ).fetchall()
        return [ApprovalRequest(*row) for row in rows]

    def get_approval_request(self, request_id: str) -> ApprovalRequest | None:
        """See :meth:`Store.get_approval_request`."""
        with self._guard():
            row = self._db.execute(
                f"SELECT {_REQUEST_COLUMNS} FROM approval_requests WHERE request_id = ?", (request_id,)
            ).fetchone()
        return None if row is None else ApprovalRequest(*row)

    def add_approval_artifact(self, action_hash: str, approval_id: str, artifact: str, submitted_at: str) -> bool:
        """See :meth:`Store.add_approval_artifact`."""
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO approval_artifacts (action_hash, approval_id, artifact, submitted_at)"
                " VALUES (?, ?, ?, ?)",
                (action_hash, approval_id, artifact, submitted_at),
            )
            return cursor.rowcount == 1

    def approval_artifacts(self, action_hash: str) -> list[str]:
        """See :meth:`Store.approval_artifacts`."""
        with self._guard():
            rows = self._db.execute(
                "SELECT artifact FROM approval_artifacts WHERE action_hash = ? ORDER BY submitted_at DESC LIMIT 16",
                (action_hash,),
            ).fetchall()
        return [row[0] for row in rows]

    # -- ledger ---------------------------------------------------------------------------------

    def append(self, make_receipt: ReceiptFactory, *, tenant_id: str, run_id: str, action: str) -> LedgerEntry:
        """See :meth:`Store.append`."""
        with self._transaction() as db:
            return self._append(db, make_receipt, tenant_id=tenant_id, run_id=run_id, action=action)

    def ledger_size(self) -> int:
        """See :meth:`Store.ledger_size`."""
        with self._guard():
            row = self._db.execute("SELECT COALESCE(MAX(seq) + 1, 0) FROM ledger").fetchone()
        return int(row[0])

    def get_entry(self, exec_id: str) -> LedgerEntry | None:
        """See :meth:`Store.get_entry`."""
        with self._guard():
            row = self._db.execute(f"SELECT {_LEDGER_COLUMNS} FROM ledger WHERE exec_id = ?", (exec_id,)).fetchone()
        return None if row is None else LedgerEntry(*row)

    def get_entry_at(self, seq: int) -> LedgerEntry | None:
        """See :meth:`Store.get_entry_at`."""
        with self._guard():
            row = self._db.execute(f"SELECT {_LEDGER_COLUMNS} FROM ledger WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else LedgerEntry(*row)

    def iter_entries(self, start_seq: int = 0, *, run_id: str | None = None) -> Iterator[LedgerEntry]:
        """See :meth:`Store.iter_entries`. Reads in pages of 1000 rows so memory stays flat."""
        where, args = ("AND run_id = ?", (run_id,)) if run_id is not None else ("", ())
        seq = start_seq
        while True:
            with self._guard():
                rows = self._db.execute(
                    f"SELECT {_LEDGER_COLUMNS} FROM ledger WHERE seq >= ? {where} ORDER BY seq LIMIT 1000",
                    (seq, *args),
                ).fetchall()
            if not rows:
                return
            for row in rows:
                yield LedgerEntry(*row)
            seq = rows[-1][0] + 1

    def get_action_request(self, tenant_id: str, nonce: str) -> str | None:
        """See :meth:`Store.get_action_request`."""
        with self._guard():
            row = self._db.execute(
                "SELECT request FROM nonces WHERE tenant_id = ? AND nonce = ?", (tenant_id, nonce)
            ).fetchone()
        return None if row is None else row[0]

    # -- tree and checkpoints -------------------------------------------------------------------

    def subtree_hashes(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """See :meth:`Store.subtree_hashes`."""
        with self._guard():
            needed = ranges_positions(ranges, _ledger_size(self._db))
            found = _read_positions(self._db, needed)
        if len(found) < len(needed):
            # Rows were written around the store since it opened (e.g. a bulk import): complete the tree.
            with self._transaction() as db:
                _backfill(db)
                found = _read_positions(db, needed)
        return [range_hash(start, end, found) for start, end in ranges]

    def tree_root(self, size: int) -> bytes:
        """See :meth:`Store.tree_root`."""
        if size == 0:
            return EMPTY_ROOT
        return self.subtree_hashes([(0, size)])[0]

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        """See :meth:`Store.latest_checkpoint`."""
        with self._guard():
            row = self._db.execute("SELECT size, root, note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
        return None if row is None else StoredCheckpoint(*row)

    def save_checkpoint(self, checkpoint: StoredCheckpoint) -> StoredCheckpoint:
        """See :meth:`Store.save_checkpoint`."""
        with self._transaction() as db:
            row = db.execute("SELECT size, root, note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
            if row is not None and row[0] >= checkpoint.size:
                return StoredCheckpoint(*row)
            db.execute(
                "INSERT INTO checkpoints (size, root, note) VALUES (?, ?, ?)",
                (checkpoint.size, checkpoint.root, checkpoint.note),
            )
        return checkpoint

    def ping(self) -> None:
        """See :meth:`Store.ping`."""
        with self._guard():
            self._db.execute("SELECT 1").fetchone()

    def close(self) -> None:
        """See :meth:`Store.close`."""
        with self._lock:
            self._db.close()

    # -- internals ------------------------------------------------------------------------------

    @staticmethod
    def _append(
        db: sqlite3.Connection, make_receipt: ReceiptFactory, *, tenant_id: str, run_id: str, action: str
    ) -> LedgerEntry:
        head = db.execute("SELECT seq, receipt_hash FROM ledger ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (0, None) if head is None else (head[0] + 1, head[1])
        receipt = make_receipt(seq, prev)
        entry = LedgerEntry(
            seq, str(receipt.body["exec_id"]), receipt.receipt_hash, receipt.canonical.decode("utf-8"), tenant_id,
            run_id, action, str(receipt.body["status"]),
        )  # fmt: skip
        db.execute(
            f"INSERT INTO ledger ({_LEDGER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (entry.seq, entry.exec_id, entry.receipt_hash, entry.envelope, tenant_id, run_id, action, entry.status),
        )
        _grow(db, seq, entry.receipt_hash, prev)
        return entry

    def _guard(self) -> _Guard:
        return _Guard(self._lock)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db, self._lock)


def _ledger_size(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT COALESCE(MAX(seq) + 1, 0) FROM ledger").fetchone()[0])


def _chunks(items: list[Position], size: int) -> Iterator[list[Position]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _read_positions(db: sqlite3.Connection, positions: Iterable[Position]) -> dict[Position, bytes]:
    """Read the hashes at ``positions`` (level 0: the ledger; others: merkle_nodes); absent ones are left out."""
    wanted = sorted(set(positions))
    found: dict[Position, bytes] = {}
    for chunk in _chunks([p for p in wanted if p[0] == 0], 500):
        marks = ", ".join("?" * len(chunk))
        rows = db.execute(f"SELECT seq, receipt_hash FROM ledger WHERE seq IN ({marks})", [i for _, i in chunk])
        found.update(((0, int(seq)), bytes.fromhex(text)) for seq, text in rows)
    for chunk in _chunks([p for p in wanted if p[0] > 0], 400):
        clause = " OR ".join(["(level = ? AND idx = ?)"] * len(chunk))
        rows = db.execute(f"SELECT level, idx, hash FROM merkle_nodes WHERE {clause}", [v for p in chunk for v in p])
        found.update(((int(level), int(idx)), bytes(value)) for level, idx, value in rows)
    return found


def _grow(db: sqlite3.Connection, seq: int, leaf: str, prev: str | None) -> None:
    """Store the tree nodes completed by leaf ``seq`` (inside its append transaction)."""
    positions = append_sibling_positions(seq)
    siblings = _read_positions(db, positions) if positions else {}
    if len(siblings) < len(positions):
        _backfill(db, seq)  # rows were written around the store: complete the tree below seq first
        siblings = _read_positions(db, positions)
    nodes = append_nodes(seq, bytes.fromhex(leaf), bytes.fromhex(prev) if prev else None, siblings)
    if nodes:
        db.executemany("INSERT OR IGNORE INTO merkle_nodes (level, idx, hash) VALUES (?, ?, ?)", nodes)


def _backfill(db: sqlite3.Connection, size: int | None = None) -> int:
    """Store every tree node missing for the first ``size`` leaves (default: the whole ledger)."""

    def stored_count(level: int) -> int:
        count, end = db.execute(
            "SELECT COUNT(*), COALESCE(MAX(idx) + 1, 0) FROM merkle_nodes WHERE level = ?", (level,)
        ).fetchone()
        if count == end:
            return int(count)
        rows = db.execute("SELECT idx FROM merkle_nodes WHERE level = ? ORDER BY idx", (level,))
        for expected, (idx,) in enumerate(rows):
            if idx != expected:
                return expected
        return int(count)  # pragma: no cover - count != end implies a hole

    def read_level(level: int, lo: int, hi: int) -> list[bytes]:
        if level == 0:
            rows = db.execute("SELECT receipt_hash FROM ledger WHERE seq >= ? AND seq < ? ORDER BY seq", (lo, hi))
            return [bytes.fromhex(text) for (text,) in rows]
        rows = db.execute(
            "SELECT hash FROM merkle_nodes WHERE level = ? AND idx >= ? AND idx < ? ORDER BY idx", (level, lo, hi)
        )
        return [bytes(value) for (value,) in rows]

    def write_level(level: int, lo: int, hashes: Iterable[bytes]) -> None:
        db.executemany(
            "INSERT OR IGNORE INTO merkle_nodes (level, idx, hash) VALUES (?, ?, ?)",
            ((level, lo + offset, value) for offset, value in enumerate(hashes)),
        )

    return backfill(_ledger_size(db) if size is None else size, stored_count, read_level, write_level)


def _enable_wal(db: sqlite3.Connection, attempts: int = 50) -> None:
    """Switch to WAL; retried because SQLite does not apply busy_timeout to this pragma.

    Several processes opening a new file at once can see "database is locked" here.
    """
    for attempt in range(attempts):
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.01 * (attempt + 1))


class _Guard:
    """Hold the connection lock; turn database failures into StoreUnavailableError."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self._lock.release()
        if isinstance(exc, sqlite3.Error):
            raise StoreUnavailableError(f"SQLite error: {exc}") from None


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` under the lock; ``ROLLBACK`` on any exception."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        self._db = db
        self._lock = lock

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._lock.release()
            raise StoreUnavailableError(f"SQLite error: {exc}") from None
        return self._db

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        try:
            if exc is None:
                self._db.execute("COMMIT")
            else:
                self._db.execute("ROLLBACK")
        except sqlite3.Error as commit_exc:
            if exc is None:
                raise StoreUnavailableError(f"SQLite commit failed: {commit_exc}") from None
        finally:
            self._lock.release()
        if isinstance(exc, sqlite3.Error):
            raise StoreUnavailableError(f"SQLite error: {exc}") from None


def _finished_state(outcome: Outcome) -> str:
    """Return the row state an outcome leaves: ``indeterminate`` stays open for ``ledger resolve``."""
    return "indeterminate" if outcome.status == "indeterminate" else "finished"
