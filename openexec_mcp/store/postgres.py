"""The PostgreSQL backend, safe for several server processes (replicas) on one database.

Transactions. Connections run in autocommit mode; a claim, an outcome-plus-receipt, an append or
a recovery is each one explicit transaction, so a crash leaves all of it or none of it (SPEC §4).
The nonce claim is ``INSERT ... ON CONFLICT DO NOTHING`` on the primary key ``(tenant_id,
nonce)``, and the ``approval_id`` is consumed by a second insert under its own primary key in the
same transaction.

The ledger (SPEC §7). Every append first takes a transaction-level advisory lock on the ledger
table, so appends from every replica queue up **in the database**; the head ``(seq,
receipt_hash)`` is read after the lock is granted, the receipt is signed for ``(seq + 1, head)``
and inserted, and the lock is released by the commit. ``seq`` stays gap-free and the hash chain
linear whatever the number of processes. The tree nodes the append completes are inserted in the
same transaction, under the same lock. Triggers refuse ``UPDATE``, ``DELETE`` and ``TRUNCATE`` on
the ledger, its tree nodes and its checkpoints. Opening a database made by an older version adds
the ``request`` column of the nonce table and the tree nodes of the existing receipts, once.

Crash recovery across replicas (SPEC §4, "process died mid-run"). Each store gets a random
``owner`` id when it opens and holds a session-level advisory lock on ``hashtextextended(owner)``
on a dedicated connection for its lifetime; every nonce it claims records that ``owner``.
PostgreSQL releases the lock when the session ends, so a held lock means a live replica.
:meth:`PostgresStore.recover_started` marks ``indeterminate`` only the ``started`` rows whose
owner's lock it can take, i.e. whose process is gone. A claim checks in its own transaction that
the lock is still held and takes it again if the liveness connection was lost (server restart).
Limits: rows of a dead replica are recovered when some replica next starts; between losing its
liveness connection and its next claim, a live replica's running calls may be recovered by a
starting one, in which case their :meth:`~PostgresStore.finish` raises and the ledger says
``indeterminate`` (nothing ever runs twice).

Failures. Every psycopg error becomes :class:`~openexec_mcp.errors.StoreUnavailableError` (the
password is never echoed). Connections are made on demand, so a call fails fast while the server
is down and works again as soon as it is back; a unit of work that finds a pooled connection dead
before its commit is retried once on a fresh connection.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from typing import Any, Final, LiteralString, TypeVar, cast

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow

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

__all__ = ["PostgresStore"]

_Conn = psycopg.Connection[TupleRow]
_T = TypeVar("_T")

_SCHEMA: Final = """
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
    owner         TEXT NOT NULL,
    PRIMARY KEY (tenant_id, nonce)
);
ALTER TABLE nonces ADD COLUMN IF NOT EXISTS request TEXT;
ALTER TABLE nonces ADD COLUMN IF NOT EXISTS extra TEXT;
CREATE INDEX IF NOT EXISTS nonces_started ON nonces (owner) WHERE state = 'started';
CREATE INDEX IF NOT EXISTS nonces_finished_at ON nonces (finished_at COLLATE "C");
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
    expires_unix   DOUBLE PRECISION NOT NULL,
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
    seq          BIGINT PRIMARY KEY CHECK (seq >= 0),
    exec_id      TEXT NOT NULL UNIQUE,
    receipt_hash TEXT NOT NULL,
    envelope     TEXT NOT NULL,
    tenant_id    TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    action       TEXT NOT NULL,
    status       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_run ON ledger (run_id, seq);
CREATE OR REPLACE FUNCTION openexec_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only (% refused)', TG_OP;
END $$;
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'ledger'::regclass AND tgname = 'ledger_append_only') THEN
        CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON ledger
            FOR EACH ROW EXECUTE FUNCTION openexec_ledger_append_only();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'ledger'::regclass AND tgname = 'ledger_no_truncate') THEN
        CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON ledger
            FOR EACH STATEMENT EXECUTE FUNCTION openexec_ledger_append_only();
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS merkle_nodes (
    level SMALLINT NOT NULL CHECK (level >= 1),
    idx   BIGINT NOT NULL CHECK (idx >= 0),
    hash  BYTEA NOT NULL,
    PRIMARY KEY (level, idx)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    size BIGINT PRIMARY KEY CHECK (size >= 0),
    root TEXT NOT NULL,
    note TEXT NOT NULL
);
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgrelid = 'merkle_nodes'::regclass AND tgname = 'merkle_nodes_append_only') THEN
        CREATE TRIGGER merkle_nodes_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON merkle_nodes
            FOR EACH STATEMENT EXECUTE FUNCTION openexec_ledger_append_only();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgrelid = 'checkpoints'::regclass AND tgname = 'checkpoints_append_only') THEN
        CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON checkpoints
            FOR EACH STATEMENT EXECUTE FUNCTION openexec_ledger_append_only();
    END IF;
END $$;
"""

_NONCE_COLUMNS: Final = (
    "tenant_id, nonce, action, action_hash, exec_id, run_id, approval, started_at, state, status, "
    "result, result_hash, error_code, error_message, extra"
)
_REQUEST_COLUMNS: Final = "request_id, tenant_id, action_hash, action_request, created_at, expires_at, expires_unix"
_LEDGER_COLUMNS: Final = "seq, exec_id, receipt_hash, envelope, tenant_id, run_id, action, status"
_OWNER_LOCK_FREE: Final = "SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))"
_OWNER_LOST: Final = object()
# Retention (Store.prune_nonces): never 'started' rows; 'indeterminate' rows of older versions have no
# finished_at. Timestamps are compared as text in the "C" collation, where RFC 3339 UTC sorts by time.
_PRUNE_BATCH: Final = 1000
_PRUNE_QUERIES: Final[tuple[LiteralString, ...]] = tuple(
    "DELETE FROM nonces WHERE (tenant_id, nonce) IN (SELECT tenant_id, nonce FROM nonces WHERE "
    + condition
    + " LIMIT 1000)"
    for condition in (
        "finished_at COLLATE \"C\" < %s AND state <> 'started'",
        "finished_at IS NULL AND state = 'indeterminate' AND started_at COLLATE \"C\" < %s",
    )
)


class PostgresStore:
    """The :class:`~openexec_mcp.store.base.Store` protocol on one PostgreSQL database (or schema).

    Args:
        url: ``postgresql://`` or ``postgres://`` URL (libpq syntax; ``options=-csearch_path%3D...``
            selects a schema). Trusted configuration; its password is never echoed.
        max_connections: Connections this process opens at most, besides its liveness connection.
        timeout_seconds: How long a call waits for a free connection before giving up.
        connect_timeout_seconds: libpq ``connect_timeout`` unless the URL sets one.

    Raises:
        ConfigError: ``url`` is not a valid libpq URL.
        StoreUnavailableError: The server does not answer or the schema cannot be created.
    """

    kind = "postgresql"

    def __init__(
        self, url: str, *, max_connections: int = 10, timeout_seconds: float = 10.0, connect_timeout_seconds: int = 5
    ) -> None:
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error:
            raise ConfigError("storage.url is not a valid PostgreSQL URL") from None
        self._password = str(params.get("password") or "")
        self._target = f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname', '')}"
        defaults = {"connect_timeout": connect_timeout_seconds, "application_name": "openexec-mcp"}
        self._conninfo = make_conninfo(url, **{k: v for k, v in defaults.items() if k not in params})
        self.owner = uuid.uuid4().hex
        """This store's replica id, recorded on the nonces it claims."""
        self._pool = _Pool(self._connect, max_connections, timeout_seconds)
        self._owner_guard = threading.Lock()
        self._owner_epoch = 0
        self._owner_conn: _Conn | None = None
        with self._owner_guard:
            self._take_owner_lock(create_schema=True)
        try:
            self._ledger_lock = self._run(_ledger_lock_key, transaction=False)
            self._run(self._backfill, transaction=True)
        except BaseException:
            self.close()
            raise

    # -- nonces ---------------------------------------------------------------------------------

    def get_nonce(self, tenant_id: str, nonce: str) -> NonceRecord | None:
        """See :meth:`Store.get_nonce`."""
        rows = self._fetch(
            f"SELECT {_NONCE_COLUMNS} FROM nonces WHERE tenant_id = %s AND nonce = %s", (tenant_id, nonce)
        )
        return NonceRecord(*rows[0]) if rows else None

    def claim_nonce(self, claim: NonceClaim) -> NonceRecord | ApprovalAlreadyConsumed | None:
        """See :meth:`Store.claim_nonce`. Also records :attr:`owner` on the new row.

        Raises:
            StoreUnavailableError: The database failed, or this process cannot hold its liveness lock.
        """

        def work(conn: _Conn) -> object:
            # A free liveness lock means the liveness session died: claim nothing until it is back.
            if _scalar(conn, _OWNER_LOCK_FREE, (self.owner,)):
                raise _Rollback(_OWNER_LOST)
            inserted = conn.execute(
                "INSERT INTO nonces (tenant_id, nonce, action, action_hash, exec_id, run_id, approval, started_at,"
                " state, owner, request, extra) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'started', %s, %s, %s)"
                " ON CONFLICT (tenant_id, nonce) DO NOTHING RETURNING 1",
                (
                    claim.tenant_id, claim.nonce, claim.action, claim.action_hash, claim.exec_id, claim.run_id,
                    claim.approval, claim.started_at, self.owner, claim.request, claim.extra,
                ),
            ).fetchone()  # fmt: skip
            if inserted is None:
                record = _nonce_record(conn, claim.tenant_id, claim.nonce)
                if record is None:
                    raise StoreUnavailableError("the nonce record was removed while it was being claimed; retry")
                return record
            if claim.approval_id is not None:
                consumed = conn.execute(
                    "INSERT INTO consumed_approvals (approval_id, tenant_id, exec_id) VALUES (%s, %s, %s)"
                    " ON CONFLICT (approval_id) DO NOTHING RETURNING 1",
                    (claim.approval_id, claim.tenant_id, claim.exec_id),
                ).fetchone()
                if consumed is None:
                    raise _Rollback(APPROVAL_CONSUMED)  # and the nonce insert with it: nothing written
            conn.execute(
                "DELETE FROM approval_requests WHERE tenant_id = %s AND action_hash = %s",
                (claim.tenant_id, claim.action_hash),
            )
            return None

        for _ in range(2):
            epoch = self._owner_epoch
            answer = self._run(work, transaction=True)
            if answer is not _OWNER_LOST:
                return cast(NonceRecord | ApprovalAlreadyConsumed | None, answer)
            with self._owner_guard:
                if epoch == self._owner_epoch:  # not already taken again by another thread
                    self._take_owner_lock(create_schema=False)
        raise StoreUnavailableError("this process cannot keep its PostgreSQL liveness lock")

    def finish(self, tenant_id: str, nonce: str, outcome: Outcome, make_receipt: ReceiptFactory) -> LedgerEntry:
        """See :meth:`Store.finish`.

        Raises:
            StoreUnavailableError: The database failed, or the nonce is no longer ``started``.
        """

        def work(conn: _Conn) -> LedgerEntry:
            row = conn.execute(
                "UPDATE nonces SET state = %s, status = %s, result = %s, result_hash = %s, error_code = %s,"
                " error_message = %s, finished_at = %s WHERE tenant_id = %s AND nonce = %s AND state = 'started'"
                " RETURNING run_id, action",
                (
                    "indeterminate" if outcome.status == "indeterminate" else "finished", outcome.status,
                    outcome.result, outcome.result_hash, outcome.error_code, outcome.error_message,
                    outcome.finished_at, tenant_id, nonce,
                ),
            ).fetchone()  # fmt: skip
            if row is None:
                raise StoreUnavailableError("the nonce claim vanished before its outcome was recorded")
            return self._append(conn, make_receipt, tenant_id=tenant_id, run_id=row[0], action=row[1])

        return self._run(work, transaction=True)

    def release_claim(self, tenant_id: str, nonce: str, exec_id: str, make_receipt: ReceiptFactory) -> LedgerEntry:
        """See :meth:`Store.release_claim`."""

        def work(conn: _Conn) -> LedgerEntry:
            row = conn.execute(
                "DELETE FROM nonces WHERE tenant_id = %s AND nonce = %s AND exec_id = %s AND state = 'started'"
                " RETURNING run_id, action",
                (tenant_id, nonce, exec_id),
            ).fetchone()
            if row is None:
                raise StoreUnavailableError("the nonce claim vanished before it was released")
            conn.execute("DELETE FROM consumed_approvals WHERE exec_id = %s", (exec_id,))
            return self._append(conn, make_receipt, tenant_id=tenant_id, run_id=row[0], action=row[1])

        return self._run(work, transaction=True)

    def recover_started(self, make_receipt: Callable[[NonceRecord], ReceiptFactory]) -> list[LedgerEntry]:
        """See :meth:`Store.recover_started`. Only rows of replicas that are gone are recovered."""

        def work(conn: _Conn) -> list[LedgerEntry]:
            owners = [row[0] for row in conn.execute("SELECT DISTINCT owner FROM nonces WHERE state = 'started'")]
            # Taking an owner's lock proves its session ended; the lock is held until commit, so two
            # starting replicas never recover the same rows.
            dead = [owner for owner in owners if _scalar(conn, _OWNER_LOCK_FREE, (owner,))]
            if not dead:
                return []
            rows = conn.execute(
                f"SELECT {_NONCE_COLUMNS} FROM nonces WHERE state = 'started' AND owner = ANY(%s)"
                " ORDER BY started_at, tenant_id, nonce FOR UPDATE",
                (dead,),
            ).fetchall()
            entries: list[LedgerEntry] = []
            for row in rows:
                record = NonceRecord(*row)
                conn.execute(
                    "UPDATE nonces SET state = 'indeterminate', finished_at = %s WHERE tenant_id = %s AND nonce = %s",
                    (recovered_at, record.tenant_id, record.nonce),
                )
                entries.append(
                    self._append(
                        conn, make_receipt(record), tenant_id=record.tenant_id, run_id=record.run_id,
                        action=record.action,
                    )
                )  # fmt: skip
            return entries

        recovered_at = format_timestamp(utc_now())
        return self._run(work, transaction=True)

    def get_nonce_by_exec_id(self, exec_id: str) -> NonceRecord | None:
        """See :meth:`Store.get_nonce_by_exec_id`."""
        rows = self._fetch(f"SELECT {_NONCE_COLUMNS} FROM nonces WHERE exec_id = %s", (exec_id,))
        return NonceRecord(*rows[0]) if rows else None

    def reclaim_indeterminate(
        self, tenant_id: str, nonce: str, exec_id: str, new_exec_id: str, started_at: str
    ) -> bool:
        """See :meth:`Store.reclaim_indeterminate`. Records :attr:`owner`, as a claim does.

        Raises:
            StoreUnavailableError: The database failed, or this process cannot hold its liveness lock.
        """

        def work(conn: _Conn) -> object:
            if _scalar(conn, _OWNER_LOCK_FREE, (self.owner,)):
                raise _Rollback(_OWNER_LOST)
            row = conn.execute(
                "UPDATE nonces SET state = 'started', exec_id = %s, started_at = %s, finished_at = NULL, owner = %s"
                " WHERE tenant_id = %s AND nonce = %s AND exec_id = %s AND state = 'indeterminate' RETURNING 1",
                (new_exec_id, started_at, self.owner, tenant_id, nonce, exec_id),
            ).fetchone()
            return row is not None

        for _ in range(2):
            epoch = self._owner_epoch
            answer = self._run(work, transaction=True)
            if answer is not _OWNER_LOST:
                return bool(answer)
            with self._owner_guard:
                if epoch == self._owner_epoch:
                    self._take_owner_lock(create_schema=False)
        raise StoreUnavailableError("this process cannot keep its PostgreSQL liveness lock")

    def fail_indeterminate(
        self, tenant_id: str, nonce: str, exec_id: str, new_exec_id: str, outcome: Outcome, make_receipt: ReceiptFactory
    ) -> LedgerEntry | None:
        """See :meth:`Store.fail_indeterminate`."""

        def work(conn: _Conn) -> LedgerEntry | None:
            row = conn.execute(
                "UPDATE nonces SET state = 'finished', exec_id = %s, status = %s, result = %s, result_hash = %s,"
                " error_code = %s, error_message = %s, finished_at = %s"
                " WHERE tenant_id = %s AND nonce = %s AND exec_id = %s AND state = 'indeterminate'"
                " RETURNING run_id, action",
                (
                    new_exec_id, outcome.status, outcome.result, outcome.result_hash, outcome.error_code,
                    outcome.error_message, outcome.finished_at, tenant_id, nonce, exec_id,
                ),
            ).fetchone()  # fmt: skip
            if row is None:
                return None
            return self._append(conn, make_receipt, tenant_id=tenant_id, run_id=row[0], action=row[1])

        return self._run(work, transaction=True)

    def prune_nonces(self, finished_before: str) -> int:
        """See :meth:`Store.prune_nonces`."""
        deleted = 0
        for query in _PRUNE_QUERIES:

            def batch(conn: _Conn, query: LiteralString = query) -> int:
                return conn.execute(query, (finished_before,)).rowcount

            while True:
                count = self._run(batch, transaction=True)
                deleted += count
                if count < _PRUNE_BATCH:
                    break

        def approvals(conn: _Conn) -> None:
            conn.execute(
                "DELETE FROM consumed_approvals WHERE NOT EXISTS"
                " (SELECT 1 FROM nonces WHERE nonces.exec_id = consumed_approvals.exec_id)"
            )
            conn.execute("DELETE FROM approval_artifacts WHERE submitted_at < %s", (finished_before,))

        self._run(approvals, transaction=True)
        return deleted

    # -- approval inbox -------------------------------------------------------------------------

    def open_approval_request(self, request: ApprovalRequest, now_unix: float) -> ApprovalRequest:
        """See :meth:`Store.open_approval_request`."""

        def work(conn: _Conn) -> ApprovalRequest:
            conn.execute("DELETE FROM approval_requests WHERE expires_unix < %s", (now_unix,))
            # A concurrent claim may close the pending request between the insert and the read.
            for _ in range(3):
                inserted = conn.execute(
                    f"INSERT INTO approval_requests ({_REQUEST_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (tenant_id, action_hash) DO NOTHING RETURNING 1",
                    (
                        request.request_id, request.tenant_id, request.action_hash, request.action_request,
                        request.created_at, request.expires_at, request.expires_unix,
                    ),
                ).fetchone()  # fmt: skip
                if inserted is not None:
                    return request
                row = conn.execute(
                    f"SELECT {_REQUEST_COLUMNS} FROM approval_requests WHERE tenant_id = %s AND action_hash = %s",
                    (request.tenant_id, request.action_hash),
                ).fetchone()
                if row is not None:
                    return ApprovalRequest(*row)
            raise StoreUnavailableError("the approval request kept changing while it was being opened; retry")

        return self._run(work, transaction=True)

    def list_approval_requests(self, now_unix: float, tenant_id: str | None = None) -> list[ApprovalRequest]:
        """See :meth:`Store.list_approval_requests`."""
        rows = self._fetch(
            f"SELECT {_REQUEST_COLUMNS} FROM approval_requests WHERE expires_unix >= %s"
            " AND (%s::text IS NULL OR tenant_id = %s) ORDER BY created_at, request_id",
            (now_unix, tenant_id, tenant_id),
        )
        return [ApprovalRequest(*row) for row in rows]

    def get_approval_request(self, request_id: str) -> ApprovalRequest | None:
        """See :meth:`Store.get_approval_request`."""
        rows = self._fetch(f"SELECT {_REQUEST_COLUMNS} FROM approval_requests WHERE request_id = %s", (request_id,))
        return ApprovalRequest(*rows[0]) if rows else None

    def add_approval_artifact(self, action_hash: str, approval_id: str, artifact: str, submitted_at: str) -> bool:
        """See :meth:`Store.add_approval_artifact`."""
        return bool(
            self._fetch(
                "INSERT INTO approval_artifacts (action_hash, approval_id, artifact, submitted_at)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
                (action_hash, approval_id, artifact, submitted_at),
            )
        )

    def approval_artifacts(self, action_hash: str) -> list[str]:
        """See :meth:`Store.approval_artifacts`."""
        rows = self._fetch(
            "SELECT artifact FROM approval_artifacts WHERE action_hash = %s ORDER BY submitted_at DESC LIMIT 16",
            (action_hash,),
        )
        return [str(row[0]) for row in rows]

    # -- ledger ---------------------------------------------------------------------------------

    def append(self, make_receipt: ReceiptFactory, *, tenant_id: str, run_id: str, action: str) -> LedgerEntry:
        """See :meth:`Store.append`."""

        def work(conn: _Conn) -> LedgerEntry:
            return self._append(conn, make_receipt, tenant_id=tenant_id, run_id=run_id, action=action)

        return self._run(work, transaction=True)

    def ledger_size(self) -> int:
        """See :meth:`Store.ledger_size`."""
        return int(self._fetch("SELECT COALESCE(MAX(seq) + 1, 0) FROM ledger")[0][0])

    def get_entry(self, exec_id: str) -> LedgerEntry | None:
        """See :meth:`Store.get_entry`."""
        rows = self._fetch(f"SELECT {_LEDGER_COLUMNS} FROM ledger WHERE exec_id = %s", (exec_id,))
        return LedgerEntry(*rows[0]) if rows else None

    def get_entry_at(self, seq: int) -> LedgerEntry | None:
        """See :meth:`Store.get_entry_at`."""
        rows = self._fetch(f"SELECT {_LEDGER_COLUMNS} FROM ledger WHERE seq = %s", (seq,))
        return LedgerEntry(*rows[0]) if rows else None

    def iter_entries(self, start_seq: int = 0, *, run_id: str | None = None) -> Iterator[LedgerEntry]:
        """See :meth:`Store.iter_entries`. Reads in pages of 1000 rows so memory stays flat."""
        seq = start_seq
        while True:
            # Two statements rather than one with "run_id IS NULL OR": each keeps its own index plan.
            if run_id is None:
                query = f"SELECT {_LEDGER_COLUMNS} FROM ledger WHERE seq >= %s ORDER BY seq LIMIT 1000"
                rows = self._fetch(query, (seq,))
            else:
                query = f"SELECT {_LEDGER_COLUMNS} FROM ledger WHERE run_id = %s AND seq >= %s ORDER BY seq LIMIT 1000"
                rows = self._fetch(query, (run_id, seq))
            if not rows:
                return
            yield from (LedgerEntry(*row) for row in rows)
            seq = rows[-1][0] + 1

    def get_action_request(self, tenant_id: str, nonce: str) -> str | None:
        """See :meth:`Store.get_action_request`."""
        rows = self._fetch("SELECT request FROM nonces WHERE tenant_id = %s AND nonce = %s", (tenant_id, nonce))
        return None if not rows or rows[0][0] is None else str(rows[0][0])

    # -- tree and checkpoints -------------------------------------------------------------------

    def subtree_hashes(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """See :meth:`Store.subtree_hashes`."""

        def read(conn: _Conn) -> tuple[set[Position], dict[Position, bytes]]:
            needed = ranges_positions(ranges, _ledger_size(conn))
            return needed, _read_positions(conn, needed)

        needed, found = self._run(read, transaction=False)
        if len(found) < len(needed):
            # Rows were written around the store since it opened (e.g. a bulk import): complete the tree.
            self._run(self._backfill, transaction=True)
            needed, found = self._run(read, transaction=False)
        return [range_hash(start, end, found) for start, end in ranges]

    def tree_root(self, size: int) -> bytes:
        """See :meth:`Store.tree_root`."""
        if size == 0:
            return EMPTY_ROOT
        return self.subtree_hashes([(0, size)])[0]

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        """See :meth:`Store.latest_checkpoint`."""
        rows = self._fetch("SELECT size, root, note FROM checkpoints ORDER BY size DESC LIMIT 1")
        return StoredCheckpoint(int(rows[0][0]), str(rows[0][1]), str(rows[0][2])) if rows else None

    def save_checkpoint(self, checkpoint: StoredCheckpoint) -> StoredCheckpoint:
        """See :meth:`Store.save_checkpoint`.

        Replicas may save concurrently: each insert is refused when a checkpoint at least as large
        is visible, so the largest stored size never goes down and is what every caller gets.
        """

        def work(conn: _Conn) -> StoredCheckpoint:
            conn.execute(
                "INSERT INTO checkpoints (size, root, note) SELECT %s, %s, %s"
                " WHERE NOT EXISTS (SELECT 1 FROM checkpoints WHERE size >= %s) ON CONFLICT (size) DO NOTHING",
                (checkpoint.size, checkpoint.root, checkpoint.note, checkpoint.size),
            )
            row = conn.execute("SELECT size, root, note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
            assert row is not None  # at least ours, or a larger one
            return StoredCheckpoint(int(row[0]), str(row[1]), str(row[2]))

        return self._run(work, transaction=True)

    def ping(self) -> None:
        """See :meth:`Store.ping`."""
        self._fetch("SELECT 1")

    def close(self) -> None:
        """See :meth:`Store.close`. Also ends the liveness session, which releases its lock."""
        self._pool.close()
        with self._owner_guard:
            if self._owner_conn is not None:
                # Unlock explicitly: the server ends a closed session (and frees its locks) only
                # some time after close() returns.
                with suppress(psycopg.Error):
                    self._owner_conn.execute("SELECT pg_advisory_unlock_all()")
                self._owner_conn.close()
                self._owner_conn = None

    # -- internals ------------------------------------------------------------------------------

    def _append(
        self, conn: _Conn, make_receipt: ReceiptFactory, *, tenant_id: str, run_id: str, action: str
    ) -> LedgerEntry:
        # Serialise appends of every replica; the head is read only once the lock is ours.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._ledger_lock,))
        head = conn.execute("SELECT seq, receipt_hash FROM ledger ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (0, None) if head is None else (int(head[0]) + 1, str(head[1]))
        receipt = make_receipt(seq, prev)
        entry = LedgerEntry(
            seq, str(receipt.body["exec_id"]), receipt.receipt_hash, receipt.canonical.decode("utf-8"), tenant_id,
            run_id, action, str(receipt.body["status"]),
        )  # fmt: skip
        conn.execute(
            f"INSERT INTO ledger ({_LEDGER_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (entry.seq, entry.exec_id, entry.receipt_hash, entry.envelope, tenant_id, run_id, action, entry.status),
        )
        self._grow(conn, seq, entry.receipt_hash, prev)
        return entry

    def _grow(self, conn: _Conn, seq: int, leaf: str, prev: str | None) -> None:
        """Store the tree nodes completed by leaf ``seq``; call with the ledger lock held."""
        positions = append_sibling_positions(seq)
        siblings = _read_positions(conn, positions) if positions else {}
        if len(siblings) < len(positions):
            self._backfill(conn, seq)  # rows were written around the store: complete the tree below seq first
            siblings = _read_positions(conn, positions)
        nodes = append_nodes(seq, bytes.fromhex(leaf), bytes.fromhex(prev) if prev else None, siblings)
        if nodes:
            _insert_nodes(conn, nodes)

    def _backfill(self, conn: _Conn, size: int | None = None) -> int:
        """Store every tree node missing for the first ``size`` leaves (default: all), under the ledger lock."""
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._ledger_lock,))

        def stored_count(level: int) -> int:
            row = conn.execute(
                "SELECT COUNT(*), COALESCE(MAX(idx) + 1, 0) FROM merkle_nodes WHERE level = %s", (level,)
            ).fetchone()
            assert row is not None
            if row[0] == row[1]:
                return int(row[0])
            gap = conn.execute(
                "SELECT COALESCE(MIN(idx) + 1, 0) FROM merkle_nodes m WHERE level = %s AND NOT EXISTS"
                " (SELECT 1 FROM merkle_nodes n WHERE n.level = m.level AND n.idx = m.idx + 1)"
                " AND EXISTS (SELECT 1 FROM merkle_nodes z WHERE z.level = %s AND z.idx = 0)",
                (level, level),
            ).fetchone()
            return int(gap[0]) if gap is not None else 0

        def read_level(level: int, lo: int, hi: int) -> list[bytes]:
            if level == 0:
                rows = conn.execute(
                    "SELECT receipt_hash FROM ledger WHERE seq >= %s AND seq < %s ORDER BY seq", (lo, hi)
                ).fetchall()
                return [bytes.fromhex(str(row[0])) for row in rows]
            rows = conn.execute(
                "SELECT hash FROM merkle_nodes WHERE level = %s AND idx >= %s AND idx < %s ORDER BY idx",
                (level, lo, hi),
            ).fetchall()
            return [bytes(row[0]) for row in rows]

        def write_level(level: int, lo: int, hashes: Iterable[bytes]) -> None:
            _insert_nodes(conn, [(level, lo + offset, value) for offset, value in enumerate(hashes)])

        return backfill(_ledger_size(conn) if size is None else size, stored_count, read_level, write_level)

    def _fetch(self, query: LiteralString, params: tuple[object, ...] = ()) -> list[TupleRow]:
        """Run one statement outside any explicit transaction and return its rows."""
        return self._run(lambda conn: conn.execute(query, params).fetchall(), transaction=False)

    def _run(self, work: Callable[[_Conn], _T], *, transaction: bool) -> _T:
        """Run ``work`` on a pooled connection, in one transaction if asked; map every failure."""
        for attempt in (1, 2):
            conn, reused = self._pool.acquire()
            committing = False
            try:
                if not transaction:
                    return work(conn)
                with conn.transaction():
                    result = work(conn)
                    committing = True
                return result
            except _Rollback as rollback:
                return cast(_T, rollback.value)
            except psycopg.Error as exc:
                # A pooled connection found dead before the commit was sent: the server rolled the
                # transaction back, so running it again on a fresh connection is safe.
                if conn.broken and reused and not committing and attempt == 1:
                    continue
                raise self._unavailable(exc) from None
            finally:
                self._pool.release(conn)
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self) -> _Conn:
        try:
            return psycopg.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise self._unavailable(exc) from None

    def _take_owner_lock(self, *, create_schema: bool) -> None:
        """(Re)open the liveness session and take this store's owner lock. Hold ``_owner_guard``."""
        if self._owner_conn is not None:
            self._owner_conn.close()
            self._owner_conn = None
        conn = self._connect()
        try:
            if create_schema:
                with conn.transaction():
                    # Replicas starting together create the schema one at a time.
                    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('openexec_mcp.schema', 0))")
                    conn.execute(_SCHEMA)
            # A dead host's session (and lock) is dropped after about a minute, not the OS's 2 hours.
            conn.execute("SET tcp_keepalives_idle = 30; SET tcp_keepalives_interval = 10; SET tcp_keepalives_count = 3")
            conn.execute("SELECT set_config('application_name', %s, false)", (f"openexec-mcp replica {self.owner}",))
            # Blocking, not try: a concurrent claim's liveness check holds the lock for an instant.
            conn.execute("SET lock_timeout = '10s'")
            conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (self.owner,))
        except psycopg.Error as exc:
            conn.close()
            raise self._unavailable(exc) from None
        self._owner_conn = conn
        self._owner_epoch += 1

    def _unavailable(self, exc: psycopg.Error) -> StoreUnavailableError:
        text = " ".join(str(exc).split())[:300] or type(exc).__name__
        if self._password:
            text = text.replace(self._password, "***")
        if isinstance(exc, psycopg.OperationalError):
            return StoreUnavailableError(f"PostgreSQL at {self._target} is unavailable: {text}")
        return StoreUnavailableError(f"PostgreSQL error at {self._target} ({exc.sqlstate or 'no SQLSTATE'}): {text}")


class _Rollback(Exception):
    """Raised by a unit of work: roll its transaction back and answer ``value``."""

    def __init__(self, value: object) -> None:
        super().__init__()
        self.value = value


class _Pool:
    """At most ``size`` connections, opened on demand; broken ones are dropped, with their idle siblings."""

    def __init__(self, connect: Callable[[], _Conn], size: int, timeout_seconds: float) -> None:
        self._connect = connect
        self._slots = threading.BoundedSemaphore(size)
        self._timeout_seconds = timeout_seconds
        self._idle: list[_Conn] = []
        self._lock = threading.Lock()
        self._closed = False

    def acquire(self) -> tuple[_Conn, bool]:
        """Return ``(connection, reused)``; raise StoreUnavailableError when none can be had."""
        if not self._slots.acquire(timeout=self._timeout_seconds):
            raise StoreUnavailableError(f"no free PostgreSQL connection within {self._timeout_seconds} seconds")
        try:
            with self._lock:
                if self._closed:
                    raise StoreUnavailableError("the PostgreSQL store is closed")
                if self._idle:
                    return self._idle.pop(), True
            return self._connect(), False
        except BaseException:
            self._slots.release()
            raise

    def release(self, conn: _Conn) -> None:
        """Keep ``conn`` for reuse if it is healthy and idle; otherwise close it."""
        doomed = [conn]
        with self._lock:
            if not self._closed and conn.info.transaction_status is TransactionStatus.IDLE:
                self._idle.append(conn)
                doomed = []
            elif conn.broken:
                # A broken connection usually means the server restarted: the idle ones are dead too.
                doomed += self._idle
                self._idle.clear()
        for dead in doomed:
            dead.close()
        self._slots.release()

    def close(self) -> None:
        """Close the idle connections; the ones in use are closed when they come back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _scalar(conn: _Conn, query: LiteralString, params: tuple[object, ...] = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def _nonce_record(conn: _Conn, tenant_id: str, nonce: str) -> NonceRecord | None:
    row = conn.execute(
        f"SELECT {_NONCE_COLUMNS} FROM nonces WHERE tenant_id = %s AND nonce = %s", (tenant_id, nonce)
    ).fetchone()
    return None if row is None else NonceRecord(*row)


def _ledger_size(conn: _Conn) -> int:
    return int(_scalar(conn, "SELECT COALESCE(MAX(seq) + 1, 0) FROM ledger"))


def _read_positions(conn: _Conn, positions: Iterable[Position]) -> dict[Position, bytes]:
    """Read the hashes at ``positions`` (level 0: the ledger; others: merkle_nodes); absent ones are left out."""
    wanted = set(positions)
    found: dict[Position, bytes] = {}
    leaves = [idx for level, idx in wanted if level == 0]
    if leaves:
        rows = conn.execute("SELECT seq, receipt_hash FROM ledger WHERE seq = ANY(%s)", (leaves,)).fetchall()
        found.update(((0, int(row[0])), bytes.fromhex(str(row[1]))) for row in rows)
    inner = [position for position in wanted if position[0] > 0]
    if inner:
        rows = conn.execute(
            "SELECT m.level, m.idx, m.hash FROM merkle_nodes m"
            " JOIN unnest(%s::smallint[], %s::bigint[]) AS w(level, idx) ON m.level = w.level AND m.idx = w.idx",
            ([level for level, _ in inner], [idx for _, idx in inner]),
        ).fetchall()
        found.update(((int(row[0]), int(row[1])), bytes(row[2])) for row in rows)
    return found


def _insert_nodes(conn: _Conn, nodes: Sequence[tuple[int, int, bytes]]) -> None:
    conn.execute(
        "INSERT INTO merkle_nodes (level, idx, hash) SELECT * FROM unnest(%s::smallint[], %s::bigint[], %s::bytea[])"
        " ON CONFLICT (level, idx) DO NOTHING",
        ([node[0] for node in nodes], [node[1] for node in nodes], [node[2] for node in nodes]),
    )


def _ledger_lock_key(conn: _Conn) -> int:
    # Keyed by the ledger table's oid, so ledgers in different schemas of one database do not queue
    # behind each other.
    return int(_scalar(conn, "SELECT hashtextextended('openexec_mcp.ledger:' || 'ledger'::regclass::oid::text, 0)"))
