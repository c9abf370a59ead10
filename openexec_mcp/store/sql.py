"""The SQL of both backends, written once: SPEC §4 nonces, §5 inbox, §7 ledger, tree and checkpoints.

:class:`SQLStore` implements the whole :class:`~openexec_mcp.store.base.Store` protocol in plain
SQL that SQLite (3.35+: ``ON CONFLICT DO NOTHING``, ``RETURNING``, row values) and PostgreSQL
both speak. Queries are written with ``?`` placeholders and translated once per dialect. A
backend subclass supplies only what truly differs:

- :meth:`SQLStore._run`: run one unit of work on a connection, in one write transaction when
  asked, mapping every driver error to a generic :class:`StoreUnavailableError` (detail logged);
- the dialect fragments (placeholder, text collation, row locking) and the schema hooks;
- the hooks that PostgreSQL's replicas need: the ledger lock, the liveness of a claim's owner.

Transactions. A claim, an outcome-plus-receipt, an append or a recovery is each one
transaction, so a crash leaves all of it or none of it (SPEC §4). The receipt is built inside
the append transaction by a :data:`~openexec_mcp.store.base.ReceiptFactory` receiving
``(seq, prev)``, with the head read under the ledger lock, so the hash chain stays linear; the
same transaction stores the RFC 9162 tree nodes the append completes.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, ClassVar, Protocol, TypeVar, cast

from openexec_mcp.core.clock import format_timestamp
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
from openexec_mcp.store.schema import LATEST, MIGRATIONS, AddColumn, script_text

__all__ = ["UNAVAILABLE", "Connection", "Rollback", "SQLStore", "unavailable"]

logger = logging.getLogger("openexec_mcp.store")

_T = TypeVar("_T")

UNAVAILABLE = "the store is unavailable"
"""The one message clients see when the database fails (SPEC §10: no address, no driver text)."""

NONCE_COLUMNS = (
    "tenant_id, nonce, action, action_hash, exec_id, run_id, approval, started_at, state, status, "
    "result, result_hash, error_code, error_message"
)
_REQUEST_COLUMNS = "request_id, tenant_id, action_hash, action_request, created_at, expires_at, expires_unix"
_LEDGER_COLUMNS = "seq, exec_id, receipt_hash, envelope, tenant_id, run_id, action, status"
_CHECKPOINT = "SELECT size, root, note FROM checkpoints ORDER BY size DESC LIMIT 1"
_PAGE = 1000
_PRUNE_BATCH = 1000
_ARTIFACTS_PER_CALL = 16


class Cursor(Protocol):
    """What both drivers' cursors offer."""

    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def executemany(self, query: Any, params_seq: Iterable[Sequence[Any]], /) -> Any: ...


class Connection(Protocol):
    """What both drivers' connections offer (``sqlite3.Connection``, ``psycopg.Connection``)."""

    def execute(self, query: Any, params: Sequence[Any] = ..., /) -> Any: ...
    def cursor(self) -> Any: ...


class Rollback(Exception):
    """Raised by a unit of work: roll its transaction back and answer ``value``."""

    def __init__(self, value: object) -> None:
        super().__init__()
        self.value = value


def unavailable(detail: str) -> StoreUnavailableError:
    """Log ``detail`` (operators only) and return the generic error clients see."""
    logger.warning("store unavailable: %s", detail)
    return StoreUnavailableError(UNAVAILABLE)


class SQLStore:
    """The :class:`~openexec_mcp.store.base.Store` protocol in SQL; subclasses add a driver.

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

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._queries: dict[str, str] = {}
        self.owner = uuid.uuid4().hex
        """This store's process id, recorded on the nonces it claims (PostgreSQL: replica liveness)."""

    # -- what a backend supplies ----------------------------------------------------------------

    def _run(self, work: Callable[[Connection], _T], *, write: bool) -> _T:  # pragma: no cover - abstract
        """Run ``work`` on a connection (in one transaction if ``write``); map driver errors."""
        raise NotImplementedError

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
                conn, "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.description, format_timestamp(self._clock())),
            )  # fmt: skip
        return current

    # -- nonces (SPEC §4) -----------------------------------------------------------------------

    def get_nonce(self, tenant_id: str, nonce: str) -> NonceRecord | None:
        """See :meth:`Store.get_nonce`."""
        return self._run(lambda conn: self._nonce(conn, tenant_id, nonce), write=False)

    def claim_nonce(self, claim: NonceClaim) -> NonceRecord | ApprovalAlreadyConsumed | None:
        """See :meth:`Store.claim_nonce`. Also records :attr:`owner` on the new row."""

        def work(conn: Connection) -> NonceRecord | ApprovalAlreadyConsumed | None:
            inserted = self._one(
                conn, "INSERT INTO nonces (tenant_id, nonce, action, action_hash, exec_id, run_id, approval,"
                " started_at, state, owner, request) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'started', ?, ?)"
                " ON CONFLICT (tenant_id, nonce) DO NOTHING RETURNING 1",
                (claim.tenant_id, claim.nonce, claim.action, claim.action_hash, claim.exec_id, claim.run_id,
                 claim.approval, claim.started_at, self.owner, claim.request),
            )  # fmt: skip
            if inserted is None:
                record = self._nonce(conn, claim.tenant_id, claim.nonce)
                if record is None:
                    raise unavailable("the nonce record was removed while it was being claimed")
                return record
            if claim.approval_id is not None:
                consumed = self._one(
                    conn, "INSERT INTO consumed_approvals (approval_id, tenant_id, exec_id, keep_until)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (approval_id) DO NOTHING RETURNING 1",
                    (claim.approval_id, claim.tenant_id, claim.exec_id, claim.approval_keep_until),
                )  # fmt: skip
                if consumed is None:
                    raise Rollback(APPROVAL_CONSUMED)  # and the nonce insert with it: nothing written
            self._exec(
                conn, "DELETE FROM approval_requests WHERE tenant_id = ? AND action_hash = ?",
                (claim.tenant_id, claim.action_hash),
            )  # fmt: skip
            return None

        return self._claiming(work)

    def finish(self, tenant_id: str, nonce: str, outcome: Outcome, make_receipt: ReceiptFactory) -> LedgerEntry:
        """See :meth:`Store.finish`.

        Raises:
            StoreUnavailableError: The database failed, or the nonce is no longer ``started``.
        """

        def work(conn: Connection) -> LedgerEntry:
            row = self._one(
                conn, "UPDATE nonces SET state = 'finished', status = ?, result = ?, result_hash = ?,"
                " error_code = ?, error_message = ?, finished_at = ? WHERE tenant_id = ? AND nonce = ?"
                " AND state = 'started' RETURNING run_id, action",
                (*_outcome_values(outcome), tenant_id, nonce),
            )  # fmt: skip
            if row is None:
                raise unavailable("the nonce claim vanished before its outcome was recorded")
            return self._append(conn, make_receipt, tenant_id=tenant_id, run_id=row[0], action=row[1])

        return self._run(work, write=True)

    def recover_started(self, make_receipt: Callable[[NonceRecord], ReceiptFactory]) -> list[LedgerEntry]:
        """See :meth:`Store.recover_started`. Only rows of processes that are gone are recovered."""
        recovered_at = format_timestamp(self._clock())

        def work(conn: Connection) -> list[LedgerEntry]:
            owners = [row[0] for row in self._all(conn, "SELECT DISTINCT owner FROM nonces WHERE state = 'started'")]
            entries: list[LedgerEntry] = []
            for owner in owners:
                if not self._owner_is_gone(conn, owner):
                    continue
                rows = self._all(
                    conn, f"SELECT {NONCE_COLUMNS} FROM nonces WHERE state = 'started' AND owner = ?"
                    f" ORDER BY started_at, tenant_id, nonce{self.for_update}", (owner,),
                )  # fmt: skip
                for record in (NonceRecord(*row) for row in rows):
                    self._exec(
                        conn, "UPDATE nonces SET state = 'indeterminate', finished_at = ?"
                        " WHERE tenant_id = ? AND nonce = ?", (recovered_at, record.tenant_id, record.nonce),
                    )  # fmt: skip
                    entries.append(
                        self._append(conn, make_receipt(record), tenant_id=record.tenant_id, run_id=record.run_id,
                                     action=record.action)
                    )  # fmt: skip
            return entries

        return self._run(work, write=True)

    def get_nonce_by_exec_id(self, exec_id: str) -> NonceRecord | None:
        """See :meth:`Store.get_nonce_by_exec_id`."""
        row = self._read_one(f"SELECT {NONCE_COLUMNS} FROM nonces WHERE exec_id = ?", (exec_id,))
        return None if row is None else NonceRecord(*row)

    def reclaim_indeterminate(
        self, tenant_id: str, nonce: str, exec_id: str, new_exec_id: str, started_at: str
    ) -> bool:
        """See :meth:`Store.reclaim_indeterminate`. Records :attr:`owner`, as a claim does."""

        def work(conn: Connection) -> bool:
            row = self._one(
                conn, "UPDATE nonces SET state = 'started', exec_id = ?, started_at = ?, finished_at = NULL,"
                " owner = ? WHERE tenant_id = ? AND nonce = ? AND exec_id = ? AND state = 'indeterminate'"
                " RETURNING 1", (new_exec_id, started_at, self.owner, tenant_id, nonce, exec_id),
            )  # fmt: skip
            return row is not None

        return self._claiming(work)

    def fail_indeterminate(
        self, tenant_id: str, nonce: str, exec_id: str, new_exec_id: str, outcome: Outcome, make_receipt: ReceiptFactory
    ) -> LedgerEntry | None:
        """See :meth:`Store.fail_indeterminate`."""

        def work(conn: Connection) -> LedgerEntry | None:
            row = self._one(
                conn, "UPDATE nonces SET exec_id = ?, state = 'finished', status = ?, result = ?, result_hash = ?,"
                " error_code = ?, error_message = ?, finished_at = ? WHERE tenant_id = ? AND nonce = ?"
                " AND exec_id = ? AND state = 'indeterminate' RETURNING run_id, action",
                (new_exec_id, *_outcome_values(outcome), tenant_id, nonce, exec_id),
            )  # fmt: skip
            if row is None:
                return None
            return self._append(conn, make_receipt, tenant_id=tenant_id, run_id=row[0], action=row[1])

        return self._run(work, write=True)

    def prune_nonces(self, finished_before: str) -> int:
        """See :meth:`Store.prune_nonces`."""
        c = self.text_order
        deleted = 0
        # Never 'started' rows; 'indeterminate' rows of older versions have no finished_at.
        for condition in (
            f"finished_at{c} < ? AND state <> 'started'",
            f"finished_at IS NULL AND state = 'indeterminate' AND started_at{c} < ?",
        ):
            query = (
                "DELETE FROM nonces WHERE (tenant_id, nonce) IN"
                f" (SELECT tenant_id, nonce FROM nonces WHERE {condition} LIMIT {_PRUNE_BATCH})"
            )
            while True:
                count = self._run(lambda conn, q=query: self._exec(conn, q, (finished_before,)).rowcount, write=True)
                deleted += count
                if count < _PRUNE_BATCH:
                    break

        def approvals(conn: Connection) -> None:
            # A consumption outlives its nonce record until its artifact has expired (SPEC §4).
            self._exec(conn, f"DELETE FROM consumed_approvals WHERE keep_until{c} < ?", (finished_before,))
            self._exec(conn, f"DELETE FROM approval_artifacts WHERE submitted_at{c} < ?", (finished_before,))

        self._run(approvals, write=True)
        return deleted

    def get_action_request(self, tenant_id: str, nonce: str) -> str | None:
        """See :meth:`Store.get_action_request`."""
        row = self._read_one("SELECT request FROM nonces WHERE tenant_id = ? AND nonce = ?", (tenant_id, nonce))
        return None if row is None or row[0] is None else str(row[0])

    # -- approval inbox (SPEC §5) ---------------------------------------------------------------

    def open_approval_request(
        self, request: ApprovalRequest, now_unix: float, max_pending: int | None = None
    ) -> ApprovalRequest:
        """See :meth:`Store.open_approval_request`."""
        values = (request.request_id, request.tenant_id, request.action_hash, request.action_request,
                  request.created_at, request.expires_at, request.expires_unix)  # fmt: skip

        def work(conn: Connection) -> ApprovalRequest:
            self._exec(conn, "DELETE FROM approval_requests WHERE expires_unix < ?", (now_unix,))
            # A concurrent claim may close the pending request between the insert and the read.
            for _ in range(3):
                found = self._one(
                    conn, f"SELECT {_REQUEST_COLUMNS} FROM approval_requests WHERE tenant_id = ? AND action_hash = ?",
                    (request.tenant_id, request.action_hash),
                )  # fmt: skip
                if found is not None:
                    return ApprovalRequest(*found)
                if max_pending is not None:
                    # The tenant's newest max_pending - 1 stay; the oldest make room for this one.
                    self._exec(
                        conn, "DELETE FROM approval_requests WHERE tenant_id = ? AND request_id NOT IN"
                        " (SELECT request_id FROM approval_requests WHERE tenant_id = ?"
                        " ORDER BY created_at DESC, request_id DESC LIMIT ?)",
                        (request.tenant_id, request.tenant_id, max(0, max_pending - 1)),
                    )  # fmt: skip
                inserted = self._one(
                    conn, f"INSERT INTO approval_requests ({_REQUEST_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (tenant_id, action_hash) DO NOTHING RETURNING 1", values,
                )  # fmt: skip
                if inserted is not None:
                    return request
            raise unavailable("the approval request kept changing while it was being opened")

        return self._run(work, write=True)

    def list_approval_requests(
        self, now_unix: float, tenant_id: str | None = None, *, after: tuple[str, str] | None = None,
        limit: int | None = None,
    ) -> list[ApprovalRequest]:
        """See :meth:`Store.list_approval_requests`."""  # fmt: skip
        where, params = ["expires_unix >= ?"], [now_unix]
        if tenant_id is not None:
            where.append("tenant_id = ?")
            params.append(tenant_id)
        if after is not None:
            where.append("(created_at, request_id) > (?, ?)")
            params += after
        query = f"SELECT {_REQUEST_COLUMNS} FROM approval_requests WHERE {' AND '.join(where)}"
        query += " ORDER BY created_at, request_id" + ("" if limit is None else f" LIMIT {int(limit)}")
        return [ApprovalRequest(*row) for row in self._read_all(query, params)]

    def get_approval_request(self, request_id: str) -> ApprovalRequest | None:
        """See :meth:`Store.get_approval_request`."""
        row = self._read_one(f"SELECT {_REQUEST_COLUMNS} FROM approval_requests WHERE request_id = ?", (request_id,))
        return None if row is None else ApprovalRequest(*row)

    def add_approval_artifact(self, action_hash: str, approval_id: str, artifact: str, submitted_at: str) -> bool:
        """See :meth:`Store.add_approval_artifact`."""
        tenant_id = _artifact_tenant(artifact)

        def work(conn: Connection) -> bool:
            return self._one(
                conn, "INSERT INTO approval_artifacts (action_hash, approval_id, artifact, submitted_at, tenant_id)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING 1",
                (action_hash, approval_id, artifact, submitted_at, tenant_id),
            ) is not None  # fmt: skip

        return self._run(work, write=True)

    def approval_artifacts(self, action_hash: str, tenant_id: str | None = None) -> list[str]:
        """See :meth:`Store.approval_artifacts`."""
        where, params = "action_hash = ?", [action_hash]
        if tenant_id is not None:
            where, params = "tenant_id = ? AND action_hash = ?", [tenant_id, action_hash]
        rows = self._read_all(
            f"SELECT artifact FROM approval_artifacts WHERE {where}"
            f" ORDER BY submitted_at DESC LIMIT {_ARTIFACTS_PER_CALL}", params,
        )  # fmt: skip
        return [str(row[0]) for row in rows]

    # -- ledger (SPEC §7) -----------------------------------------------------------------------

    def append(self, make_receipt: ReceiptFactory, *, tenant_id: str, run_id: str, action: str) -> LedgerEntry:
        """See :meth:`Store.append`."""
        return self._run(
            lambda conn: self._append(conn, make_receipt, tenant_id=tenant_id, run_id=run_id, action=action),
            write=True,
        )

    def ledger_size(self) -> int:
        """See :meth:`Store.ledger_size`."""
        return self._run(_ledger_size, write=False)

    def get_entry(self, exec_id: str) -> LedgerEntry | None:
        """See :meth:`Store.get_entry`."""
        row = self._read_one(f"SELECT {_LEDGER_COLUMNS} FROM ledger WHERE exec_id = ?", (exec_id,))
        return None if row is None else LedgerEntry(*row)

    def get_entry_at(self, seq: int) -> LedgerEntry | None:
        """See :meth:`Store.get_entry_at`."""
        row = self._read_one(f"SELECT {_LEDGER_COLUMNS} FROM ledger WHERE seq = ?", (seq,))
        return None if row is None else LedgerEntry(*row)

    def iter_entries(
        self, start_seq: int = 0, *, run_id: str | None = None, tenant_id: str | None = None
    ) -> Iterator[LedgerEntry]:
        """See :meth:`Store.iter_entries`."""
        where, params = "", []
        if tenant_id is not None:
            where, params = where + " AND tenant_id = ?", [*params, tenant_id]
        if run_id is not None:
            where, params = where + " AND run_id = ?", [*params, run_id]
        query = f"SELECT {_LEDGER_COLUMNS} FROM ledger WHERE seq >= ?{where} ORDER BY seq LIMIT {_PAGE}"
        seq = start_seq
        while rows := self._read_all(query, [seq, *params]):
            yield from (LedgerEntry(*row) for row in rows)
            seq = int(rows[-1][0]) + 1

    # -- tree and checkpoints -------------------------------------------------------------------

    def subtree_hashes(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """See :meth:`Store.subtree_hashes`."""

        def read(conn: Connection) -> tuple[set[Position], dict[Position, bytes]]:
            needed = ranges_positions(ranges, _ledger_size(conn))
            return needed, self._read_positions(conn, needed)

        needed, found = self._run(read, write=False)
        if len(found) < len(needed):
            # Rows were written around the store since it opened (e.g. a bulk import): complete the tree.
            self._run(self._backfill, write=True)
            needed, found = self._run(read, write=False)
        return [range_hash(start, end, found) for start, end in ranges]

    def tree_root(self, size: int) -> bytes:
        """See :meth:`Store.tree_root`."""
        return EMPTY_ROOT if size == 0 else self.subtree_hashes([(0, size)])[0]

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        """See :meth:`Store.latest_checkpoint`."""
        row = self._read_one(_CHECKPOINT)
        return None if row is None else StoredCheckpoint(int(row[0]), str(row[1]), str(row[2]))

    def save_checkpoint(self, checkpoint: StoredCheckpoint) -> StoredCheckpoint:
        """See :meth:`Store.save_checkpoint`.

        Replicas may save concurrently: each insert is refused when a checkpoint at least as large
        is visible, so the largest stored size never goes down and is what every caller gets.
        """

        def work(conn: Connection) -> StoredCheckpoint:
            self._exec(
                conn, "INSERT INTO checkpoints (size, root, note) SELECT ?, ?, ? WHERE NOT EXISTS"
                " (SELECT 1 FROM checkpoints WHERE size >= ?) ON CONFLICT (size) DO NOTHING",
                (checkpoint.size, checkpoint.root, checkpoint.note, checkpoint.size),
            )  # fmt: skip
            row = self._one(conn, _CHECKPOINT)
            return StoredCheckpoint(int(row[0]), str(row[1]), str(row[2]))

        return self._run(work, write=True)

    def ping(self) -> None:
        """See :meth:`Store.ping`."""
        self._read_one("SELECT 1")

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

    def _nonce(self, conn: Connection, tenant_id: str, nonce: str) -> NonceRecord | None:
        row = self._one(conn, f"SELECT {NONCE_COLUMNS} FROM nonces WHERE tenant_id = ? AND nonce = ?", (tenant_id, nonce))
        return None if row is None else NonceRecord(*row)

    def _append(
        self, conn: Connection, make_receipt: ReceiptFactory, *, tenant_id: str, run_id: str, action: str
    ) -> LedgerEntry:
        self._lock_ledger(conn)  # the head is read only once the lock is ours
        head = self._one(conn, "SELECT seq, receipt_hash FROM ledger ORDER BY seq DESC LIMIT 1")
        seq, prev = (0, None) if head is None else (int(head[0]) + 1, str(head[1]))
        receipt = make_receipt(seq, prev)
        entry = LedgerEntry(
            seq, str(receipt.body["exec_id"]), receipt.receipt_hash, receipt.canonical.decode("utf-8"), tenant_id,
            run_id, action, str(receipt.body["status"]),
        )  # fmt: skip
        self._exec(
            conn, f"INSERT INTO ledger ({_LEDGER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (entry.seq, entry.exec_id, entry.receipt_hash, entry.envelope, tenant_id, run_id, action, entry.status),
        )  # fmt: skip
        positions = append_sibling_positions(seq)
        siblings = self._read_positions(conn, positions) if positions else {}
        if len(siblings) < len(positions):
            self._backfill(conn, seq)  # rows were written around the store: complete the tree below seq first
            siblings = self._read_positions(conn, positions)
        nodes = append_nodes(seq, bytes.fromhex(entry.receipt_hash), bytes.fromhex(prev) if prev else None, siblings)
        self._insert_nodes(conn, nodes)
        return entry

    def _read_positions(self, conn: Connection, positions: Iterable[Position]) -> dict[Position, bytes]:
        """Read the hashes at ``positions`` (level 0: the ledger; others: merkle_nodes); absent ones are left out."""
        wanted = sorted(set(positions))
        found: dict[Position, bytes] = {}
        leaves = [idx for level, idx in wanted if level == 0]
        for start in range(0, len(leaves), 500):
            chunk = leaves[start : start + 500]
            rows = self._all(conn, f"SELECT seq, receipt_hash FROM ledger WHERE seq IN ({', '.join('?' * len(chunk))})",
                             chunk)  # fmt: skip
            found.update(((0, int(seq)), bytes.fromhex(str(text))) for seq, text in rows)
        inner = [position for position in wanted if position[0] > 0]
        for start in range(0, len(inner), 400):
            chunk = inner[start : start + 400]
            rows = self._all(
                conn, "SELECT level, idx, hash FROM merkle_nodes WHERE (level, idx) IN"
                f" (VALUES {', '.join(['(?, ?)'] * len(chunk))})", [value for position in chunk for value in position],
            )  # fmt: skip
            found.update(((int(level), int(idx)), bytes(value)) for level, idx, value in rows)
        return found

    def _insert_nodes(self, conn: Connection, nodes: Sequence[tuple[int, int, bytes]]) -> None:
        if nodes:
            conn.cursor().executemany(
                self._sql("INSERT INTO merkle_nodes (level, idx, hash) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"), nodes
            )

    def _backfill(self, conn: Connection, size: int | None = None) -> int:
        """Store every tree node missing for the first ``size`` leaves (default: the whole ledger)."""
        self._lock_ledger(conn)

        def stored_count(level: int) -> int:
            count, end = self._one(
                conn, "SELECT COUNT(*), COALESCE(MAX(idx) + 1, 0) FROM merkle_nodes WHERE level = ?", (level,)
            )
            if count == end:
                return int(count)
            gap = self._one(
                conn, "SELECT COALESCE(MIN(idx) + 1, 0) FROM merkle_nodes m WHERE level = ? AND NOT EXISTS"
                " (SELECT 1 FROM merkle_nodes n WHERE n.level = m.level AND n.idx = m.idx + 1)"
                " AND EXISTS (SELECT 1 FROM merkle_nodes z WHERE z.level = ? AND z.idx = 0)", (level, level),
            )  # fmt: skip
            return int(gap[0]) if gap is not None else 0

        def read_level(level: int, lo: int, hi: int) -> list[bytes]:
            if level == 0:
                rows = self._all(conn, "SELECT receipt_hash FROM ledger WHERE seq >= ? AND seq < ? ORDER BY seq",
                                 (lo, hi))  # fmt: skip
                return [bytes.fromhex(str(text)) for (text,) in rows]
            rows = self._all(
                conn, "SELECT hash FROM merkle_nodes WHERE level = ? AND idx >= ? AND idx < ? ORDER BY idx",
                (level, lo, hi),
            )  # fmt: skip
            return [bytes(value) for (value,) in rows]

        def write_level(level: int, lo: int, hashes: Iterable[bytes]) -> None:
            self._insert_nodes(conn, [(level, lo + offset, value) for offset, value in enumerate(hashes)])

        return backfill(_ledger_size(conn) if size is None else size, stored_count, read_level, write_level)


def _ledger_size(conn: Connection) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(seq) + 1, 0) FROM ledger").fetchone()[0])


def _outcome_values(outcome: Outcome) -> tuple[str | None, ...]:
    return (outcome.status, outcome.result, outcome.result_hash, outcome.error_code, outcome.error_message,
            outcome.finished_at)  # fmt: skip


def _artifact_tenant(artifact: str) -> str | None:
    """Return the (signed) ``tenant_id`` an artifact names, or ``None``."""
    try:
        parsed = json.loads(artifact)
    except ValueError:
        return None
    tenant = cast(dict[str, Any], parsed).get("tenant_id") if isinstance(parsed, dict) else None
    return tenant if isinstance(tenant, str) else None
