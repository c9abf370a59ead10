"""The SQL of both backends, written once: SPEC §4 nonces, §5 inbox, §7 ledger, tree and checkpoints.

:class:`SQLStore` implements the whole :class:`~openexec_mcp.store.base.Store` protocol in plain
SQL that SQLite (3.35+: ``ON CONFLICT DO NOTHING``, ``RETURNING``, row values) and PostgreSQL
both speak. Queries are written with ``?`` placeholders and translated once per dialect. A
backend subclass supplies only what truly differs (:class:`~openexec_mcp.store.sqlcore.SQLCore`);
the ledger, tree and checkpoint SQL is in :mod:`openexec_mcp.store.sqlledger`, the approval
inbox's in :mod:`openexec_mcp.store.sqlinbox` and the grants' in :mod:`openexec_mcp.store.grants`.

Transactions. A claim, an outcome-plus-receipt, an append or a recovery is each one
transaction, so a crash leaves all of it or none of it (SPEC §4). The receipt is built inside
the append transaction by a :data:`~openexec_mcp.store.base.ReceiptFactory` receiving
``(seq, prev)``, with the head read under the ledger lock, so the hash chain stays linear; the
same transaction stores the RFC 9162 tree nodes the append completes.
"""

from __future__ import annotations

from collections.abc import Callable

from openexec_mcp.core.clock import format_timestamp
from openexec_mcp.core.nonce import NonceRecord
from openexec_mcp.store.base import (
    APPROVAL_CONSUMED,
    ApprovalAlreadyConsumed,
    LedgerEntry,
    NonceClaim,
    Outcome,
    ReceiptFactory,
)
from openexec_mcp.store.grants import GrantSQL
from openexec_mcp.store.sqlcore import UNAVAILABLE, Connection, Rollback, unavailable
from openexec_mcp.store.sqlinbox import InboxSQL
from openexec_mcp.store.sqlledger import LedgerSQL

__all__ = ["UNAVAILABLE", "Connection", "Rollback", "SQLStore", "unavailable"]

NONCE_COLUMNS = (
    "tenant_id, nonce, action, action_hash, exec_id, run_id, approval, started_at, state, status, "
    "result, result_hash, error_code, error_message, extra"
)
_PRUNE_BATCH = 1000


class SQLStore(LedgerSQL, InboxSQL, GrantSQL):
    """The whole :class:`~openexec_mcp.store.base.Store` protocol in SQL; subclasses add a driver.

    Args:
        clock: Returns now (aware UTC); the store's only time source (recovery times).
    """

    # -- nonces (SPEC §4) -----------------------------------------------------------------------

    def get_nonce(self, tenant_id: str, nonce: str) -> NonceRecord | None:
        """See :meth:`Store.get_nonce`."""
        return self._run(lambda conn: self._nonce(conn, tenant_id, nonce), write=False)

    def claim_nonce(self, claim: NonceClaim) -> NonceRecord | ApprovalAlreadyConsumed | None:
        """See :meth:`Store.claim_nonce`. Also records :attr:`owner` on the new row."""
        return self._claiming(lambda conn: self._claim(conn, claim))

    def _claim(self, conn: Connection, claim: NonceClaim) -> NonceRecord | ApprovalAlreadyConsumed | None:
        """Claim ``claim`` inside the caller's transaction: the nonce row, then the approval_id it consumes."""
        existing = self._claim_in(conn, claim)
        if existing is not None:
            return existing
        if claim.approval_id is not None:
            consumed = self._one(
                conn,
                "INSERT INTO consumed_approvals (approval_id, tenant_id, exec_id, keep_until)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (approval_id) DO NOTHING RETURNING 1",
                (claim.approval_id, claim.tenant_id, claim.exec_id, claim.approval_keep_until),
            )
            if consumed is None:
                raise Rollback(APPROVAL_CONSUMED)  # and the nonce insert with it: nothing written
        return None

    def _claim_in(self, conn: Connection, claim: NonceClaim) -> NonceRecord | None:
        """Insert the ``started`` row of ``claim`` and close its pending request; the existing record on conflict."""
        inserted = self._one(
            conn,
            "INSERT INTO nonces (tenant_id, nonce, action, action_hash, exec_id, run_id, approval,"
            " started_at, state, owner, request, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'started', ?, ?, ?)"
            " ON CONFLICT (tenant_id, nonce) DO NOTHING RETURNING 1",
            (
                claim.tenant_id,
                claim.nonce,
                claim.action,
                claim.action_hash,
                claim.exec_id,
                claim.run_id,
                claim.approval,
                claim.started_at,
                self.owner,
                claim.request,
                claim.extra,
            ),
        )
        if inserted is None:
            record = self._nonce(conn, claim.tenant_id, claim.nonce)
            if record is None:
                raise unavailable("the nonce record was removed while it was being claimed")
            return record
        self._exec(
            conn,
            "DELETE FROM approval_requests WHERE tenant_id = ? AND action_hash = ?",
            (claim.tenant_id, claim.action_hash),
        )
        return None

    def finish(self, tenant_id: str, nonce: str, outcome: Outcome, make_receipt: ReceiptFactory) -> LedgerEntry:
        """See :meth:`Store.finish`.

        Raises:
            StoreUnavailableError: The database failed, or the nonce is no longer ``started``.
        """
        return self._run(lambda conn: self._finish(conn, tenant_id, nonce, outcome, make_receipt), write=True)

    def claim_and_finish(
        self, claim: NonceClaim, outcome: Outcome, make_receipt: ReceiptFactory
    ) -> NonceRecord | LedgerEntry:
        """Claim a nonce and record its outcome and receipt in ONE transaction (read-only actions).

        For an action declared ``read_only`` whose handler already ran (README, "One durable
        commit where one suffices"): a crash before this commit loses only a read. ``claim`` must
        consume no approval (``approval_id`` is ``None``).

        Returns:
            The existing record when the nonce was already claimed (nothing written), else the
            ledger entry of the outcome.

        Raises:
            StoreUnavailableError: The database failed (nothing written).
        """
        if claim.approval_id is not None:
            raise ValueError("claim_and_finish consumes no approval")

        def work(conn: Connection) -> NonceRecord | LedgerEntry:
            existing = self._claim(conn, claim)
            if isinstance(existing, NonceRecord):
                return existing
            return self._finish(conn, claim.tenant_id, claim.nonce, outcome, make_receipt)

        return self._claiming(work)

    def _finish(
        self, conn: Connection, tenant_id: str, nonce: str, outcome: Outcome, make_receipt: ReceiptFactory
    ) -> LedgerEntry:
        row = self._one(
            conn,
            "UPDATE nonces SET state = ?, status = ?, result = ?, result_hash = ?,"
            " error_code = ?, error_message = ?, finished_at = ? WHERE tenant_id = ? AND nonce = ?"
            " AND state = 'started' RETURNING run_id, action",
            (_row_state(outcome), *_outcome_values(outcome), tenant_id, nonce),
        )
        if row is None:
            raise unavailable("the nonce claim vanished before its outcome was recorded")
        return self._append(conn, make_receipt, tenant_id=tenant_id, run_id=row[0], action=row[1])

    def release_claim(self, tenant_id: str, nonce: str, exec_id: str, make_receipt: ReceiptFactory) -> LedgerEntry:
        """See :meth:`Store.release_claim`."""

        def work(conn: Connection) -> LedgerEntry:
            row = self._one(
                conn,
                "DELETE FROM nonces WHERE tenant_id = ? AND nonce = ? AND exec_id = ? AND state = 'started'"
                " RETURNING run_id, action",
                (tenant_id, nonce, exec_id),
            )
            if row is None:
                raise unavailable("the nonce claim vanished before it was released")
            self._exec(conn, "DELETE FROM consumed_approvals WHERE exec_id = ?", (exec_id,))
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
                    conn,
                    f"SELECT {NONCE_COLUMNS} FROM nonces WHERE state = 'started' AND owner = ?"
                    f" ORDER BY started_at, tenant_id, nonce{self.for_update}",
                    (owner,),
                )
                for record in (NonceRecord(*row) for row in rows):
                    self._exec(
                        conn,
                        "UPDATE nonces SET state = 'indeterminate', finished_at = ? WHERE tenant_id = ? AND nonce = ?",
                        (recovered_at, record.tenant_id, record.nonce),
                    )
                    entries.append(
                        self._append(
                            conn,
                            make_receipt(record),
                            tenant_id=record.tenant_id,
                            run_id=record.run_id,
                            action=record.action,
                        )
                    )
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
                conn,
                "UPDATE nonces SET state = 'started', exec_id = ?, started_at = ?, finished_at = NULL,"
                " owner = ? WHERE tenant_id = ? AND nonce = ? AND exec_id = ? AND state = 'indeterminate'"
                " RETURNING 1",
                (new_exec_id, started_at, self.owner, tenant_id, nonce, exec_id),
            )
            return row is not None

        return self._claiming(work)

    def fail_indeterminate(
        self, tenant_id: str, nonce: str, exec_id: str, new_exec_id: str, outcome: Outcome, make_receipt: ReceiptFactory
    ) -> LedgerEntry | None:
        """See :meth:`Store.fail_indeterminate`."""

        def work(conn: Connection) -> LedgerEntry | None:
            row = self._one(
                conn,
                "UPDATE nonces SET exec_id = ?, state = 'finished', status = ?, result = ?, result_hash = ?,"
                " error_code = ?, error_message = ?, finished_at = ? WHERE tenant_id = ? AND nonce = ?"
                " AND exec_id = ? AND state = 'indeterminate' RETURNING run_id, action",
                (new_exec_id, *_outcome_values(outcome), tenant_id, nonce, exec_id),
            )
            if row is None:
                return None
            return self._append(conn, make_receipt, tenant_id=tenant_id, run_id=row[0], action=row[1])

        return self._run(work, write=True)

    def prune_nonces(self, finished_before: str) -> int:
        """See :meth:`Store.prune_nonces`."""
        c = self.text_order
        deleted = 0
        # Only 'finished' rows: a 'started' call is running or awaits recovery, and an
        # 'indeterminate' one awaits `ledger resolve`, which needs its record (SPEC §4, §11).
        query = (
            "DELETE FROM nonces WHERE (tenant_id, nonce) IN (SELECT tenant_id, nonce FROM nonces"
            f" WHERE state = 'finished' AND finished_at{c} < ? LIMIT {_PRUNE_BATCH})"
        )
        while True:
            count = self._run(lambda conn: self._exec(conn, query, (finished_before,)).rowcount, write=True)
            deleted += count
            if count < _PRUNE_BATCH:
                break

        def approvals(conn: Connection) -> None:
            # A consumption outlives its nonce record until its artifact has expired (SPEC §4).
            self._exec(conn, f"DELETE FROM consumed_approvals WHERE keep_until{c} < ?", (finished_before,))
            self._prune_inbox(conn, finished_before)
            self._prune_grants(conn, finished_before)

        self._run(approvals, write=True)
        return deleted

    def get_action_request(self, tenant_id: str, nonce: str) -> str | None:
        """See :meth:`Store.get_action_request`."""
        row = self._read_one("SELECT request FROM nonces WHERE tenant_id = ? AND nonce = ?", (tenant_id, nonce))
        return None if row is None or row[0] is None else str(row[0])

    def ping(self) -> None:
        """See :meth:`Store.ping`."""
        self._read_one("SELECT 1")

    # -- internals ------------------------------------------------------------------------------

    def _nonce(self, conn: Connection, tenant_id: str, nonce: str) -> NonceRecord | None:
        row = self._one(
            conn, f"SELECT {NONCE_COLUMNS} FROM nonces WHERE tenant_id = ? AND nonce = ?", (tenant_id, nonce)
        )
        return None if row is None else NonceRecord(*row)


def _row_state(outcome: Outcome) -> str:
    """Return the state an outcome leaves its row in: ``indeterminate`` stays open for ``ledger resolve``."""
    return "indeterminate" if outcome.status == "indeterminate" else "finished"


def _outcome_values(outcome: Outcome) -> tuple[str | None, ...]:
    return (
        outcome.status,
        outcome.result,
        outcome.result_hash,
        outcome.error_code,
        outcome.error_message,
        outcome.finished_at,
    )
