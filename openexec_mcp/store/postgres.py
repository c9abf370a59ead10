"""The PostgreSQL backend, safe for several server processes (replicas) on one database.

The SQL is :mod:`openexec_mcp.store.sql`'s; this module adds what PostgreSQL does differently:
a ``psycopg_pool`` connection pool, ``%s`` placeholders, the "C" collation for timestamp text,
row locks, and the two locks that make replicas safe.

The ledger (SPEC §7). Every append first takes a transaction-level advisory lock on the ledger
table, so appends from every replica queue up **in the database**; the head is read after the
lock is granted and the lock is released by the commit: ``seq`` stays gap-free and the hash
chain linear whatever the number of processes. Triggers refuse ``UPDATE``, ``DELETE`` and
``TRUNCATE`` on the ledger, its tree nodes and its checkpoints.

Crash recovery across replicas (SPEC §4, "process died mid-run"). Each store gets a random
``owner`` id when it opens and holds a session-level advisory lock on ``hashtextextended(owner)``
on a dedicated connection for its lifetime; every nonce it claims records that ``owner``.
PostgreSQL releases the lock when the session ends, so a held lock means a live replica.
:meth:`~PostgresStore.recover_started` marks ``indeterminate`` only the ``started`` rows whose
owner's lock it can take, i.e. whose process is gone. A claim checks in its own transaction that
the lock is still held and takes it again if the liveness connection was lost (server restart).
Limits: rows of a dead replica are recovered when some replica next sweeps or starts; between
losing its liveness connection and its next claim, a live replica's running calls may be
recovered by another, in which case their ``finish`` raises and the ledger says
``indeterminate`` (nothing ever runs twice).

Failures. Every psycopg error becomes the generic
:class:`~openexec_mcp.errors.StoreUnavailableError`; the detail (without the password) goes to
the log. A unit of work that finds a pooled connection dead before its commit checks the idle
connections and is retried once on a fresh one. During an outage, calls wait for a connection
a moment only, then connect by themselves, so they fail fast while the server is down and work
again as soon as it is back, while the pool reconnects in the background.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import suppress
from datetime import datetime
from typing import Final, LiteralString, TypeVar, cast

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from openexec_mcp.core.clock import utc_now
from openexec_mcp.errors import ConfigError, StoreUnavailableError
from openexec_mcp.store.sql import SQLStore
from openexec_mcp.store.sqlcore import Connection, Rollback, unavailable
from openexec_mcp.store.writer import Writer

__all__ = ["PostgresStore"]

_Conn = psycopg.Connection[TupleRow]
_T = TypeVar("_T")

_OWNER_LOCK_FREE: Final = "SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))"
_OWNER_LOST: Final = object()
_OUTAGE_WAIT_SECONDS: Final = 0.2


class PostgresStore(SQLStore):
    """The :class:`~openexec_mcp.store.base.Store` protocol on one PostgreSQL database (or schema).

    Args:
        url: ``postgresql://`` or ``postgres://`` URL (libpq syntax; ``options=-csearch_path%3D...``
            selects a schema). Trusted configuration; its password is never echoed.
        max_connections: Pooled connections this process opens at most, besides its liveness one.
        timeout_seconds: How long a call waits for a free connection before giving up.
        connect_timeout_seconds: libpq ``connect_timeout`` unless the URL sets one.
        clock: Returns now (aware UTC).

    Raises:
        ConfigError: ``url`` is not a valid libpq URL, or the schema is newer than this code.
        StoreUnavailableError: The server does not answer or the schema cannot be created.
    """

    kind = "postgresql"
    dialect = "postgresql"
    placeholder = "%s"
    text_order = ' COLLATE "C"'
    for_update = " FOR UPDATE"

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 10,
        timeout_seconds: float = 10.0,
        connect_timeout_seconds: int = 5,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error:
            raise ConfigError("storage.url is not a valid PostgreSQL URL") from None
        super().__init__(clock)
        self._password = str(params.get("password") or "")
        self._target = f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname', '')}"
        defaults = {"connect_timeout": connect_timeout_seconds, "application_name": "openexec-mcp"}
        self._conninfo = make_conninfo(url, **{k: v for k, v in defaults.items() if k not in params})
        self._timeout = timeout_seconds
        self._down = False
        self._owner_guard = threading.Lock()
        self._owner_epoch = 0
        self._owner_conn: _Conn | None = None
        self._ledger_lock = 0
        self._writer: Writer[_Conn] | None = None
        self._batch_pooled = True
        self._pool: ConnectionPool[_Conn] = ConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=max_connections,
            kwargs={"autocommit": True},
            timeout=timeout_seconds,
            reconnect_timeout=max(timeout_seconds, 5.0),
            open=False,
            name="openexec-mcp",
        )
        with self._owner_guard:
            self._take_owner_lock(create_schema=True)
        try:
            self._pool.open()
            self._ledger_lock = self._run(_ledger_lock_key, write=False)
            self._run(self._backfill, write=True)
            self._writer = Writer(self, name="openexec-store-writer postgresql", on_failure=self._commit_error)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """See :meth:`Store.close`. Queued writes are committed first; also ends the liveness session."""
        if self._writer is not None:
            self._writer.close()
        self._pool.close()
        with self._owner_guard:
            if self._owner_conn is not None:
                # Unlock explicitly: the server ends a closed session (and frees its locks) only
                # some time after close() returns.
                with suppress(psycopg.Error):
                    self._owner_conn.execute("SELECT pg_advisory_unlock_all()")
                self._owner_conn.close()
                self._owner_conn = None

    # -- the hooks of SQLStore ------------------------------------------------------------------

    # -- the writer's batch hooks (openexec_mcp.store.writer.Batch) -----------------------------

    def begin(self) -> _Conn:
        """Take a connection and open a group transaction on it, holding the ledger lock (writer thread only)."""
        conn, pooled = self._acquire()
        self._batch_pooled = pooled
        try:
            conn.execute("BEGIN")
            # The ledger lock first, for the whole group: a group mixes claims (row locks on nonces)
            # and appends (this lock); taken in one order by every replica, they cannot deadlock.
            self._lock_ledger(conn)
        except psycopg.Error as exc:
            self._give_back(conn, pooled)
            if conn.broken:
                self._down = True
            raise self._unavailable(exc) from None
        return conn

    def commit(self, conn: _Conn) -> None:
        """Commit the group (the advisory ledger lock, if an append took it, is released with it)."""
        try:
            conn.execute("COMMIT")
        except psycopg.Error as exc:
            if conn.broken:
                self._down = True
            raise self._unavailable(exc) from None
        self._down = False
        self._give_back(conn, self._batch_pooled)

    def abandon(self, conn: _Conn) -> None:
        """Roll the group back (if the connection still can) and give the connection back."""
        with suppress(psycopg.Error):
            if not conn.broken:
                conn.execute("ROLLBACK")
        self._give_back(conn, self._batch_pooled)
        if conn.broken:
            with suppress(psycopg.Error, PoolClosed):
                self._pool.check()  # a restarted server leaves every idle connection dead: replace them

    def retry(self, conn: _Conn) -> bool:
        """Re-run the batch once when the connection died before the commit was sent (the server rolled it back)."""
        return bool(conn.broken)

    def _give_back(self, conn: _Conn, pooled: bool) -> None:
        if pooled:
            self._pool.putconn(conn)  # a broken connection is dropped, not pooled
        else:
            conn.close()

    def _commit_error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, StoreUnavailableError):
            return exc
        if isinstance(exc, psycopg.Error):
            return self._unavailable(exc)
        return unavailable(f"PostgreSQL at {self._target}: {exc}")

    def submit(self, fn: Callable[[], _T]) -> Future[_T] | None:
        """Queue ``fn`` (a store call) on the writer thread; ``None`` before the writer runs."""
        return None if self._writer is None else self._writer.submit(fn)

    def _run(self, work: Callable[[Connection], _T], *, write: bool) -> _T:
        """Run ``work``: a write on the writer thread, in its own savepoint of a group transaction.

        Before the writer starts, and for reads off the writer thread, ``work`` runs on a pooled
        connection (in one transaction if ``write``); every failure is mapped.
        """
        writer = self._writer
        if writer is not None:
            if writer.on_thread():
                conn = writer.connection
                if conn is None:  # pragma: no cover - the writer runs store work only inside a batch
                    raise unavailable("a store write ran outside a group transaction")
                return self._in_savepoint(conn, work, write=write)
            if write:
                return writer.call(lambda: self._run(work, write=True))
        return self._run_alone(work, write=write)

    def _in_savepoint(self, conn: _Conn, work: Callable[[Connection], _T], *, write: bool) -> _T:
        try:
            if not write:
                return work(conn)
            conn.execute("SAVEPOINT op")
            try:
                result = work(conn)
            except BaseException as exc:
                if not conn.broken:
                    conn.execute("ROLLBACK TO SAVEPOINT op")
                    conn.execute("RELEASE SAVEPOINT op")
                if isinstance(exc, Rollback):
                    return cast(_T, exc.value)
                raise
            conn.execute("RELEASE SAVEPOINT op")
            return result
        except psycopg.Error as exc:
            if conn.broken:
                self._down = True
            raise self._unavailable(exc) from None

    def _run_alone(self, work: Callable[[Connection], _T], *, write: bool) -> _T:
        """Run ``work`` on a pooled connection, in one transaction if ``write``; map every failure."""
        for attempt in (1, 2):
            conn, pooled = self._acquire()
            committing = False
            try:
                if not write:
                    result = work(conn)
                else:
                    with conn.transaction():
                        result = work(conn)
                        committing = True
                self._down = False
                return result
            except Rollback as rollback:
                return cast(_T, rollback.value)
            except psycopg.Error as exc:
                if conn.broken:
                    self._down = True
                # Dead before the commit was sent: the server rolled it back, so a retry is safe.
                if not (conn.broken and not committing and attempt == 1):
                    raise self._unavailable(exc) from None
            finally:
                if pooled:
                    self._pool.putconn(conn)  # a broken connection is dropped, not pooled
                else:
                    conn.close()
            self._pool.check()  # a restarted server leaves every idle connection dead: replace them
        raise AssertionError("unreachable")  # pragma: no cover

    def _acquire(self) -> tuple[_Conn, bool]:
        """Return ``(connection, pooled)``: a pooled connection, or during an outage a direct one.

        After an outage the pool reconnects in the background, with a backoff; meanwhile a call
        connects by itself (failing fast while the server is still down), so service resumes
        with the first call after the server is back.
        """
        try:
            conn = self._pool.getconn(timeout=_OUTAGE_WAIT_SECONDS if self._down else self._timeout)
        except PoolTimeout as exc:
            if not self._down:
                self._down = True
                raise unavailable(f"PostgreSQL at {self._target}: no free connection ({exc})") from None
        except PoolClosed:
            raise unavailable("the PostgreSQL store is closed") from None
        else:
            self._down = False
            return conn, True
        try:
            return psycopg.connect(self._conninfo, autocommit=True), False
        except psycopg.Error as exc:
            raise self._unavailable(exc) from None

    def _claiming(self, work: Callable[[Connection], _T]) -> _T:
        """Run a claim after checking, in its transaction, that this replica's liveness lock is held.

        A free lock means the liveness session died: the lock is taken again (once) before the claim.

        Raises:
            StoreUnavailableError: The database failed, or this process cannot hold its liveness lock.
        """

        def checked(conn: Connection) -> _T:
            if self._one(conn, _OWNER_LOCK_FREE, (self.owner,))[0]:
                raise Rollback(_OWNER_LOST)
            return work(conn)

        for _ in range(2):
            epoch = self._owner_epoch
            answer = self._run(checked, write=True)
            if answer is not _OWNER_LOST:
                return answer
            with self._owner_guard:
                if epoch == self._owner_epoch:  # not already taken again by another thread
                    self._take_owner_lock(create_schema=False)
        raise unavailable("this process cannot keep its PostgreSQL liveness lock")

    def _lock_ledger(self, conn: Connection) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._ledger_lock,))

    def _owner_is_gone(self, conn: Connection, owner: str) -> bool:
        # Taking an owner's lock proves its session ended; the lock is held until commit, so two
        # replicas never recover the same rows.
        return bool(self._one(conn, _OWNER_LOCK_FREE, (owner,))[0])

    def _run_script(self, conn: Connection, text: str) -> None:
        conn.execute(cast(LiteralString, text))

    def _columns(self, conn: Connection, table: str) -> set[str]:
        rows = self._all(
            conn,
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = ?",
            (table,),
        )
        return {str(row[0]) for row in rows}

    # -- internals ------------------------------------------------------------------------------

    def _take_owner_lock(self, *, create_schema: bool) -> None:
        """(Re)open the liveness session and take this store's owner lock. Hold ``_owner_guard``."""
        if self._owner_conn is not None:
            self._owner_conn.close()
            self._owner_conn = None
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise self._unavailable(exc) from None
        try:
            if create_schema:
                with conn.transaction():
                    # Replicas starting together migrate the schema one at a time.
                    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('openexec_mcp.schema', 0))")
                    self._migrate(conn)
            # A dead host's session (and lock) is dropped after about a minute, not the OS's 2 hours.
            conn.execute("SET tcp_keepalives_idle = 30; SET tcp_keepalives_interval = 10; SET tcp_keepalives_count = 3")
            conn.execute("SELECT set_config('application_name', %s, false)", (f"openexec-mcp replica {self.owner}",))
            # Blocking, not try: a concurrent claim's liveness check holds the lock for an instant.
            conn.execute("SET lock_timeout = '10s'")
            conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (self.owner,))
        except psycopg.Error as exc:
            conn.close()
            raise self._unavailable(exc) from None
        except BaseException:
            conn.close()
            raise
        self._owner_conn = conn
        self._owner_epoch += 1

    def _unavailable(self, exc: psycopg.Error) -> StoreUnavailableError:
        """Log what failed (password masked) and return the generic error clients see."""
        text = " ".join(str(exc).split())[:300] or type(exc).__name__
        if self._password:
            text = text.replace(self._password, "***")
        return unavailable(f"PostgreSQL at {self._target} ({exc.sqlstate or type(exc).__name__}): {text}")


def _ledger_lock_key(conn: Connection) -> int:
    # Keyed by the ledger table's oid, so ledgers in different schemas of one database do not queue
    # behind each other.
    row = conn.execute("SELECT hashtextextended('openexec_mcp.ledger:' || 'ledger'::regclass::oid::text, 0)").fetchone()
    return int(row[0])
