"""The base of the shared SQL layer: dialect hooks, query helpers and the schema migration runner.

:class:`SQLCore` is what :mod:`openexec_mcp.store.sql` builds on. Queries are written with ``?``
placeholders and translated once per dialect. A backend subclass supplies only what truly
differs: :meth:`SQLCore._run` (one unit of work on a connection, in one write transaction when
asked, every driver error mapped to the generic :class:`StoreUnavailableError`, detail logged),
the dialect fragments (placeholder, text collation, row locks), the schema hooks, and the hooks
PostgreSQL's replicas need (the ledger lock, the liveness of a claim's owner).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from datetime import datetime
from typing import Any, ClassVar, Protocol, TypeVar, cast

from openexec_mcp.core.clock import format_timestamp
from openexec_mcp.errors import ConfigError, StoreUnavailableError
from openexec_mcp.store.schema import LATEST, MIGRATIONS, AddColumn, script_text

__all__ = ["UNAVAILABLE", "Connection", "Rollback", "SQLCore", "ledger_size", "unavailable"]

logger = logging.getLogger("openexec_mcp.store")

_T = TypeVar("_T")

UNAVAILABLE = "the store is unavailable"
"""The one message clients see when the database fails (SPEC §10: no address, no driver text)."""


class Connection(Protocol):
    """What both drivers' connections offer (``sqlite3.Connection``, ``psycopg.Connection``)."""

    def execute(self, query: Any, params: Sequence[Any] = ..., /) -> Any:
        """Run one statement; return its cursor (``fetchone``, ``fetchall``, ``rowcount``)."""
        ...

    def cursor(self) -> Any:
        """Return a cursor (``executemany``)."""
        ...


class Rollback(Exception):
    """Raised by a unit of work: roll its transaction back and answer ``value``."""

    def __init__(self, value: object) -> None:
        super().__init__()
        self.value = value


def unavailable(detail: str) -> StoreUnavailableError:
    """Log ``detail`` (operators only) and return the generic error clients see."""
    logger.warning("store unavailable: %s", detail)
    return StoreUnavailableError(UNAVAILABLE)


class SQLCore:
    """Dialect hooks, query helpers and the schema runner; a backend subclass adds a driver.

    Args:
        clock: Returns now (aware UTC); the store's only time source (recovery times).
    """

    kind: ClassVar[str]
    dialect: ClassVar[str]
    """Names the schema scripts: ``sqlite`` or ``postgresql``."""
    placeholder: ClassVar[str] = "?"
    text_order: ClassVar[str] = ""
    """Collation that makes text comparison byte order (RFC 3339 UTC timestamps sort by time)."""
    for_update: ClassVar[str] = ""
    inline_reads: ClassVar[bool] = False
    """Whether a point read is cheap and local enough to run on the event loop (SQLite), not a thread."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._queries: dict[str, str] = {}
        self.owner = uuid.uuid4().hex
        """This store's process id, recorded on the nonces it claims (PostgreSQL: replica liveness)."""

    # -- what a backend supplies ----------------------------------------------------------------

    def _run(self, work: Callable[[Connection], _T], *, write: bool) -> _T:  # pragma: no cover - abstract
        """Run ``work`` on a connection (in one transaction if ``write``); map driver errors."""
        raise NotImplementedError

    def submit(self, fn: Callable[[], _T]) -> Future[_T] | None:
        """Queue a store call on this store's writer thread (group commit); ``None``: no writer, use a thread."""
        return None

    def _claiming(self, work: Callable[[Connection], _T]) -> _T:
        """Run a write that records :attr:`owner` on a ``started`` row (PostgreSQL checks liveness)."""
        return self._run(work, write=True)

    def _lock_ledger(self, conn: Connection) -> None:
        """Serialise appends of every process on this database, until the transaction ends."""

    def _owner_is_gone(self, conn: Connection, owner: str) -> bool:
        """Tell whether the process that claimed rows as ``owner`` is gone (SQLite: at start-up, all are)."""
        return True

    def _run_script(self, conn: Connection, text: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _columns(self, conn: Connection, table: str) -> set[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- schema ---------------------------------------------------------------------------------

    def _migrate(self, conn: Connection) -> int:
        """Apply the schema versions the database lacks; call holding the schema lock, in a transaction.

        Returns:
            The version the database was at.

        Raises:
            ConfigError: The database is of a newer version than this code.
        """
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version"
            " (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        current = int(self._one(conn, "SELECT COALESCE(MAX(version), 0) FROM schema_version")[0])
        if current > LATEST:
            raise ConfigError(f"the database schema is version {current}; this openexec-mcp knows up to {LATEST}")
        for migration in MIGRATIONS[current:]:
            for step in migration.steps:
                if isinstance(step, AddColumn):
                    if step.column not in self._columns(conn, step.table):
                        conn.execute(f"ALTER TABLE {step.table} ADD COLUMN {step.column} {step.declaration}")
                else:
                    self._run_script(conn, script_text(self.dialect, step.name))
            self._exec(
                conn,
                "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.description, format_timestamp(self._clock())),
            )
        return current

    # -- internals ------------------------------------------------------------------------------

    def _sql(self, query: str) -> str:
        if self.placeholder == "?":
            return query
        translated = self._queries.get(query)
        if translated is None:
            translated = self._queries[query] = query.replace("?", self.placeholder)
        return translated

    def _exec(self, conn: Connection, query: str, params: Sequence[Any] = ()) -> Any:
        return conn.execute(self._sql(query), params)

    def _one(self, conn: Connection, query: str, params: Sequence[Any] = ()) -> Any:
        return self._exec(conn, query, params).fetchone()

    def _all(self, conn: Connection, query: str, params: Sequence[Any] = ()) -> list[Any]:
        return cast(list[Any], self._exec(conn, query, params).fetchall())

    def _read_one(self, query: str, params: Sequence[Any] = ()) -> Any:
        return self._run(lambda conn: self._one(conn, query, params), write=False)

    def _read_all(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._run(lambda conn: self._all(conn, query, params), write=False)


def ledger_size(conn: Connection) -> int:
    """Return the number of receipts in the ledger, on ``conn``."""
    return int(conn.execute("SELECT COALESCE(MAX(seq) + 1, 0) FROM ledger").fetchone()[0])
