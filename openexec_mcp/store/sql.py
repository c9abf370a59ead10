"""The SQL of both backends, written once: SPEC §4 nonces, §5 inbox, §7 ledger, tree and checkpoints.

:class:`SQLStore` implements the whole :class:`~openexec_mcp.store.base.Store` protocol in plain
SQL that SQLite (3.35+: ``ON CONFLICT DO NOTHING``, ``RETURNING``, row values) and PostgreSQL
both speak. Queries are written with ``?`` placeholders and translated once per dialect. A
backend subclass supplies only what truly differs (:class:`~openexec_mcp.store.sqlcore.SQLCore`);
the ledger, tree and checkpoint SQL is in :mod:`openexec_mcp.store.sqlledger`.

Transactions. A claim, an outcome-plus-receipt, an append or a recovery is each one
transaction, so a crash leaves all of it or none of it (SPEC §4). The receipt is built inside
the append transaction by a :data:`~openexec_mcp.store.base.ReceiptFactory` receiving
``(seq, prev)``, with the head read under the ledger lock, so the hash chain stays linear; the
same transaction stores the RFC 9162 tree nodes the append completes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

from openexec_mcp.core.clock import format_timestamp
from openexec_mcp.core.nonce import NonceRecord
from openexec_mcp.store.base import (
    APPROVAL_CONSUMED,
    ApprovalAlreadyConsumed,
    ApprovalRequest,
    LedgerEntry,
    NonceClaim,
    Outcome,
    ReceiptFactory,
)
from openexec_mcp.store.grants import GrantSQL
from openexec_mcp.store.sqlcore import UNAVAILABLE, Connection, Rollback, unavailable
from openexec_mcp.store.sqlledger import LedgerSQL

__all__ = ["UNAVAILABLE", "Connection", "Rollback", "SQLStore", "unavailable"]

NONCE_COLUMNS = (
    "tenant_id, nonce, action, action_hash, exec_id, run_id, approval, started_at, state, status, "
    "result, result_hash, error_code, error_message, extra"
)
_REQUEST_COLUMNS = "request_id, tenant_id, action_hash, action_request, created_at, expires_at, expires_unix"
_PRUNE_BATCH = 1000
_ARTIFACTS_PER_CALL = 16


class SQLStore(LedgerSQL, GrantSQL):
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

        def work(conn: Connection) -> NonceRecord | ApprovalAlreadyConsumed | None:
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

        return self._claiming(work)

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

        def work(conn: Connection) -> LedgerEntry:
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

        return self._run(work, write=True)

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
            self._prune_grants(conn, finished_before)

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
        values = (
            request.request_id,
            request.tenant_id,
            request.action_hash,
            request.action_request,
            request.created_at,
            request.expires_at,
            request.expires_unix,
        )

        def work(conn: Connection) -> ApprovalRequest:
            self._exec(conn, "DELETE FROM approval_requests WHERE expires_unix < ?", (now_unix,))
            # A concurrent claim may close the pending request between the insert and the read.
            for _ in range(3):
                found = self._one(
                    conn,
                    f"SELECT {_REQUEST_COLUMNS} FROM approval_requests WHERE tenant_id = ? AND action_hash = ?",
                    (request.tenant_id, request.action_hash),
                )
                if found is not None:
                    return ApprovalRequest(*found)
                if max_pending is not None:
                    # The tenant's newest max_pending - 1 stay; the oldest make room for this one.
                    self._exec(
                        conn,
                        "DELETE FROM approval_requests WHERE tenant_id = ? AND request_id NOT IN"
                        " (SELECT request_id FROM approval_requests WHERE tenant_id = ?"
                        " ORDER BY created_at DESC, request_id DESC LIMIT ?)",
                        (request.tenant_id, request.tenant_id, max(0, max_pending - 1)),
                    )
                inserted = self._one(
                    conn,
                    f"INSERT INTO approval_requests ({_REQUEST_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (tenant_id, action_hash) DO NOTHING RETURNING 1",
                    values,
                )
                if inserted is not None:
                    return request
            raise unavailable("the approval request kept changing while it was being opened")

        return self._run(work, write=True)

    def list_approval_requests(
        self,
        now_unix: float,
        tenant_id: str | None = None,
        *,
        after: tuple[str, str] | None = None,
        limit: int | None = None,
    ) -> list[ApprovalRequest]:
        """See :meth:`Store.list_approval_requests`."""
        where, params = ["expires_unix >= ?"], list[object]([now_unix])
        if tenant_id is not None:
            where.append("tenant_id = ?")
            params.append(tenant_id)
        if after is not None:
            where.append("(created_at, request_id) > (?, ?)")
            params += list(after)
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
            return (
                self._one(
                    conn,
                    "INSERT INTO approval_artifacts (action_hash, approval_id, artifact, submitted_at, tenant_id)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING 1",
                    (action_hash, approval_id, artifact, submitted_at, tenant_id),
                )
                is not None
            )

        return self._run(work, write=True)

    def approval_artifacts(self, action_hash: str, tenant_id: str | None = None) -> list[str]:
        """See :meth:`Store.approval_artifacts`.

        Rows without a tenant come only from a replica of a version before schema 2 during a
        rolling upgrade; they are included, and the gate checks each artifact's tenant anyway.
        """
        where, params = "action_hash = ?", [action_hash]
        if tenant_id is not None:
            where, params = "(tenant_id = ? OR tenant_id IS NULL) AND action_hash = ?", [tenant_id, action_hash]
        rows = self._read_all(
            f"SELECT artifact FROM approval_artifacts WHERE {where}"
            f" ORDER BY submitted_at DESC LIMIT {_ARTIFACTS_PER_CALL}",
            params,
        )
        return [str(row[0]) for row in rows]

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


def _artifact_tenant(artifact: str) -> str | None:
    """Return the (signed) ``tenant_id`` an artifact names, or ``None``."""
    try:
        parsed = json.loads(artifact)
    except ValueError:
        return None
    tenant = cast(dict[str, Any], parsed).get("tenant_id") if isinstance(parsed, dict) else None
    return tenant if isinstance(tenant, str) else None
