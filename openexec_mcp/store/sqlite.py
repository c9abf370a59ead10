"""The embedded SQLite backend (WAL, one file on disk): the shared SQL on one serialised connection.

One connection, serialised by a lock, in autocommit mode with explicit ``BEGIN IMMEDIATE``
transactions: a claim, an outcome-plus-receipt, or an append is each one write transaction, so a
crash leaves either all of it or none of it. ``synchronous=FULL`` (the default) makes a commit
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
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from openexec_mcp.core.clock import utc_now
from openexec_mcp.errors import ConfigError
from openexec_mcp.store.sql import SQLStore
from openexec_mcp.store.sqlcore import Connection, Rollback, unavailable

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

    def __init__(self, path: Path, *, synchronous: str = "full", clock: Callable[[], datetime] = utc_now) -> None:
        if synchronous not in ("full", "normal"):
            raise ConfigError("storage.sqlite_synchronous must be 'full' or 'normal'")
        super().__init__(clock)
        self.path = path
        self._lock = threading.Lock()
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
        """See :meth:`Store.close`."""
        with self._lock:
            self._db.close()

    def _run(self, work: Callable[[Connection], _T], *, write: bool) -> _T:
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
