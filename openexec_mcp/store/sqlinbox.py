"""The approval inbox in shared SQL (SPEC §5, "Where an artifact comes from" 3).

Pending approval requests (one per ``(tenant_id, action_hash)``, bounded per tenant, dropped when
expired or when their call claims its nonce) and submitted artifacts (looked up by
``action_hash``, filtered on the artifact's own signed ``tenant_id``). :class:`InboxSQL` is
:class:`~openexec_mcp.store.base.ApprovalInbox`, mixed into
:class:`~openexec_mcp.store.sql.SQLStore`; the claim that closes a pending request is there.
"""

from __future__ import annotations

import json
from typing import Any, cast

from openexec_mcp.store.records import ApprovalRequest
from openexec_mcp.store.sqlcore import Connection, SQLCore, unavailable

__all__ = ["InboxSQL"]

_REQUEST_COLUMNS = "request_id, tenant_id, action_hash, action_request, created_at, expires_at, expires_unix"
_ARTIFACTS_PER_CALL = 16


class InboxSQL(SQLCore):
    """:class:`~openexec_mcp.store.base.ApprovalInbox` in SQL for both backends."""

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

    def _prune_inbox(self, conn: Connection, finished_before: str) -> None:
        """Delete the artifacts submitted before the retention horizon (RFC 3339 UTC ms), in ``conn``."""
        self._exec(conn, f"DELETE FROM approval_artifacts WHERE submitted_at{self.text_order} < ?", (finished_before,))


def _artifact_tenant(artifact: str) -> str | None:
    """Return the (signed) ``tenant_id`` an artifact names, or ``None``."""
    try:
        parsed = json.loads(artifact)
    except ValueError:
        return None
    tenant = cast(dict[str, Any], parsed).get("tenant_id") if isinstance(parsed, dict) else None
    return tenant if isinstance(tenant, str) else None
