"""The embedded SQLite backend (WAL, one file on disk): the shared SQL on one serialised connection.

Writes: one write connection, owned by the store's writer thread
(:mod:`openexec_mcp.store.writer`), in autocommit mode with explicit ``BEGIN IMMEDIATE`` group
transactions: a claim, an outcome-plus-receipt, or an append is each one savepoint of a group
that commits once, so a crash leaves either all of an operation or none of it, and an operation
is acknowledged only once its group committed. Reads: one connection per reading thread (WAL
readers never wait for the writer). ``synchronous=FULL`` (the default) makes a commit
durable across power loss before the handler runs; ``NORMAL`` survives a process crash but may
lose the last commits on power loss. Triggers make the ledger, its tree nodes and its checkpoints
append-only at the database level. ``BEGIN IMMEDIATE`` already serialises every writer of the
file, so the ledger needs no lock of its own, and only one process serves a file: recovery of
``started`` rows happens at start-up.

The database holds payloads and results: it and its ``-wal``/``-shm`` files are created 0600
(and tightened if found wider); a group- or world-accessible directory is reported on stderr.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from openexec_mcp.core.clock import utc_now
from openexec_mcp.errors import ConfigError, StoreUnavailableError
from openexec_mcp.store.sql import SQLStore
from openexec_mcp.store.sqlcore import Connection, Rollback, unavailable
from openexec_mcp.store.writer import Writer

__all__ = ["SQLiteStore"]

logger = logging.getLogger("openexec_mcp.store.sqlite")

_T = TypeVar("_T")
_SIDE_FILES = ("", "-wal", "-shm", "-journal")


class SQLiteStore(SQLStore):
    """The :class:`~openexec_mcp.store.base.Store` protocol on one SQLite file.

    Args:
        path: The database file; its parent directory is created (mode 0700) if missing.
        synchronous: ``full`` (durable across power loss) or ``normal``.
        clock: Returns now (aware UTC).

    Raises:
        ConfigError: ``synchronous`` is not ``full`` or ``normal``, or the schema is newer.
        StoreUnavailableError: The file cannot be opened or initialised.
    """

    kind = "sqlite"
    dialect = "sqlite"
    inline_reads = True
    """A point read is a local WAL read that never waits for the writer: the gate may run it on the event loop."""

    def __init__(self, path: Path, *, synchronous: str = "full", clock: Callable[[], datetime] = utc_now) -> None:
        if synchronous not in ("full", "normal"):
            raise ConfigError("storage.sqlite_synchronous must be 'full' or 'normal'")
        super().__init__(clock)
        self.path = path
        self._lock = threading.Lock()
        self._writer: Writer[sqlite3.Connection] | None = None
        self._readers = threading.local()
        self._read_conns: list[sqlite3.Connection] = []
        self._closed = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _warn_if_shared(path.parent)
            old_umask = os.umask(0o077)  # the -wal and -shm files are created later, by SQLite, with it
            try:
                self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
                self._db.execute("PRAGMA busy_timeout=30000")
                _enable_wal(self._db)
                self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
                _restrict(path)
                self._run(self._migrate, write=True)
                _restrict(path)
            finally:
                os.umask(old_umask)
            self._run(self._backfill, write=True)
            self._writer = Writer(self, name=f"openexec-store-writer {path.name}", on_failure=self._commit_error)
        except (sqlite3.Error, OSError) as exc:
            self._close_quietly()
            raise unavailable(f"cannot open SQLite database {path}: {exc}") from None
        except BaseException:
            self._close_quietly()
            raise

    def _close_quietly(self) -> None:
        db: sqlite3.Connection | None = getattr(self, "_db", None)
        if db is not None:
            with suppress(sqlite3.Error):
                db.close()

    def close(self) -> None:
        """See :meth:`Store.close`. Queued writes are committed first."""
        if self._writer is not None:
            self._writer.close()
        self._closed = True
        with self._lock:
            for conn in self._read_conns:
                with suppress(sqlite3.Error):
                    conn.close()
            self._read_conns.clear()
            self._db.close()

    # -- the writer's batch hooks (openexec_mcp.store.writer.Batch) -----------------------------

    def begin(self) -> sqlite3.Connection:
        """Open a group transaction on the write connection (writer thread only)."""
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def commit(self, conn: sqlite3.Connection) -> None:
        """Commit the group: one fsync with ``synchronous=full``."""
        if not conn.in_transaction:
            raise sqlite3.OperationalError("the group transaction was rolled back by SQLite")
        conn.execute("COMMIT")

    def abandon(self, conn: sqlite3.Connection) -> None:
        """Roll the group back, if SQLite has not already."""
        with suppress(sqlite3.Error):
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    def retry(self, conn: sqlite3.Connection) -> bool:
        """Never: a local file does not drop its connection."""
        return False

    def _commit_error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, StoreUnavailableError):
            return exc
        return unavailable(f"SQLite error on {self.path}: {exc}")

    def submit(self, fn: Callable[[], _T]) -> Future[_T] | None:
        """Queue ``fn`` (a store call) on the writer thread; ``None`` before the writer runs."""
        return None if self._writer is None else self._writer.submit(fn)

    # -- running work ---------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._readers, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA query_only=ON")
            self._readers.conn = conn
            with self._lock:
                self._read_conns.append(conn)
        return conn

    def _run(self, work: Callable[[Connection], _T], *, write: bool) -> _T:
        """Run ``work``: a write on the writer thread, in its own savepoint of a group transaction.

        Before the writer starts (schema, backfill) a write is its own ``BEGIN IMMEDIATE`` ...
        ``COMMIT`` under the connection lock. A read runs on this thread's read connection, or,
        on the writer thread, on the group's connection (it sees the group's own writes).
        """
        if self._closed:
            raise unavailable(f"the SQLite store {self.path} is closed")
        writer = self._writer
        if writer is None:
            return self._run_alone(work, write=write)
        if writer.on_thread():
            conn = writer.connection
            if conn is None:  # pragma: no cover - the writer runs store work only inside a batch
                raise unavailable("a store write ran outside a group transaction")
            return self._in_savepoint(conn, work) if write else self._guarded(conn, work)
        if write:
            return writer.call(lambda: self._run(work, write=True))
        return self._guarded(self._reader(), work)

    def _guarded(self, conn: sqlite3.Connection, work: Callable[[Connection], _T]) -> _T:
        try:
            return work(conn)
        except sqlite3.Error as exc:
            raise unavailable(f"SQLite error on {self.path}: {exc}") from None

    def _in_savepoint(self, conn: sqlite3.Connection, work: Callable[[Connection], _T]) -> _T:
        try:
            if not conn.in_transaction:
                raise unavailable("the group transaction was rolled back by SQLite")
            conn.execute("SAVEPOINT op")
            try:
                result = work(conn)
            except BaseException as exc:
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                if isinstance(exc, Rollback):
                    return exc.value  # type: ignore[return-value]
                raise
            conn.execute("RELEASE op")
            return result
        except sqlite3.Error as exc:
            raise unavailable(f"SQLite error on {self.path}: {exc}") from None

    def _run_alone(self, work: Callable[[Connection], _T], *, write: bool) -> _T:
        """Run ``work`` under the connection lock, inside ``BEGIN IMMEDIATE`` ... ``COMMIT`` if ``write``."""
        with self._lock:
            try:
                if not write:
                    return work(self._db)
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    result = work(self._db)
                except BaseException as exc:
                    self._db.execute("ROLLBACK")
                    if isinstance(exc, Rollback):
                        return exc.value  # type: ignore[return-value]
                    raise
                self._db.execute("COMMIT")
                return result
            except sqlite3.Error as exc:
                with suppress(sqlite3.Error):  # a closed connection cannot even say
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                raise unavailable(f"SQLite error on {self.path}: {exc}") from None

    def _run_script(self, conn: Connection, text: str) -> None:
        """Run a schema script statement by statement (``executescript`` would commit the transaction)."""
        statement = ""
        for line in text.splitlines(keepends=True):
            if line.lstrip().startswith("--"):
                continue
            statement += line
            if sqlite3.complete_statement(statement):
                conn.execute(statement)
                statement = ""

    def _columns(self, conn: Connection, table: str) -> set[str]:
        return {str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})").fetchall()}


def _restrict(path: Path) -> None:
    """Make the database and its side files readable by their owner only (they hold payloads)."""
    for suffix in _SIDE_FILES:
        side = path.with_name(path.name + suffix)
        try:
            if stat.S_IMODE(side.stat().st_mode) & 0o077:
                side.chmod(0o600)
        except FileNotFoundError:
            continue


def _warn_if_shared(directory: Path) -> None:
    mode = stat.S_IMODE(directory.stat().st_mode)
    if mode & 0o077:
        logger.warning(
            "state directory %s is accessible to other users (mode %03o); the database is kept 0600, "
            "but consider chmod 700",
            directory,
            mode,
        )


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
