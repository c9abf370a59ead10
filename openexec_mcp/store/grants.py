"""Grants in the store (SPEC §13): stored grants, revocation, one use consumed with the nonce claim.

:class:`GrantTable` is the protocol role; :class:`GrantSQL` its SQL for both backends, mixed into
:class:`~openexec_mcp.store.sql.SQLStore`. A use is consumed in the transaction that claims the
nonce (:meth:`GrantTable.claim_nonce_with_grant`): either both happen or neither, so a grant
with ``max_uses = n`` approves at most ``n`` calls however many replicas race for it. A failed
call keeps its use (the handler ran).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal, Protocol

from openexec_mcp.core.canonical import canonicalize
from openexec_mcp.core.nonce import NonceRecord
from openexec_mcp.store.records import NonceClaim
from openexec_mcp.store.sqlcore import Connection, Rollback, SQLCore

__all__ = ["GrantRefused", "GrantSQL", "GrantTable", "StoredGrant"]

_GRANT_COLUMNS = "grant_id, tenant_id, artifact, max_uses, uses, expires_at, keep_until, submitted_at, revoked_at"
_GRANTS_PER_CALL = 64


@dataclass(frozen=True, slots=True)
class StoredGrant:
    """A stored grant row.

    Attributes:
        grant_id: The grant's id (unique per database).
        tenant_id: Its signed tenant.
        artifact: JCS text of the grant as submitted.
        max_uses: Its ``max_uses``.
        uses: Uses consumed so far (0 to ``max_uses``).
        expires_at: RFC 3339 UTC (ms) of its ``expires_at`` + clock skew: unusable after.
        keep_until: RFC 3339 UTC (ms); the row (its use count) is kept at least until then.
        submitted_at: RFC 3339 UTC (ms).
        revoked_at: RFC 3339 UTC (ms) of its revocation, or ``None``.
    """

    grant_id: str
    tenant_id: str
    artifact: str
    max_uses: int
    uses: int
    expires_at: str
    keep_until: str | None
    submitted_at: str
    revoked_at: str | None


@dataclass(frozen=True, slots=True)
class GrantRefused:
    """Answer of :meth:`GrantTable.claim_nonce_with_grant` when the grant cannot be used (nothing written)."""

    reason: Literal["exhausted", "revoked"]


class GrantTable(Protocol):
    """The grants of SPEC §13."""

    def add_grant(self, grant: StoredGrant) -> bool:
        """Store a verified grant; ``False`` (nothing changed) when its grant_id is already stored."""
        ...

    def revoke_grant(self, grant_id: str, tenant_id: str | None, revoked_at: str) -> StoredGrant | None:
        """Revoke a grant (idempotent); ``None`` when no such grant (of ``tenant_id``, when given)."""
        ...

    def get_grant(self, grant_id: str) -> StoredGrant | None:
        """Return a stored grant, or ``None``."""
        ...

    def grants_for(self, tenant_id: str, now: str) -> list[StoredGrant]:
        """Return up to 64 grants of ``tenant_id`` not yet expired at ``now`` (RFC 3339 UTC ms), newest first.

        Exhausted and revoked grants are included, so the gate can say why a matching one is unusable.
        """
        ...

    def claim_nonce_with_grant(self, claim: NonceClaim, grant_id: str) -> NonceRecord | GrantRefused | int:
        """Claim the nonce and consume one use of ``grant_id``, in one transaction.

        ``claim.approval`` is the receipt's approval object (JCS text); its ``use`` member is set
        to the use number in the stored row.

        Returns:
            The use number (1-based) when this call owns the nonce; the existing record when the
            nonce was already claimed; :class:`GrantRefused` when the grant is exhausted or
            revoked (checked in that order). In both refusals nothing is written.
        """
        ...


class GrantSQL(SQLCore):
    """:class:`GrantTable` in SQL both backends speak."""

    def _claim_in(self, conn: Connection, claim: NonceClaim) -> NonceRecord | None:  # pragma: no cover - abstract
        """Insert the ``started`` row of ``claim`` on ``conn``; the existing record on conflict."""
        raise NotImplementedError

    def add_grant(self, grant: StoredGrant) -> bool:
        """See :meth:`GrantTable.add_grant`."""

        def work(conn: Connection) -> bool:
            row = self._one(
                conn,
                f"INSERT INTO grants ({_GRANT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (grant_id) DO NOTHING RETURNING 1",
                (
                    grant.grant_id,
                    grant.tenant_id,
                    grant.artifact,
                    grant.max_uses,
                    grant.uses,
                    grant.expires_at,
                    grant.keep_until,
                    grant.submitted_at,
                    grant.revoked_at,
                ),
            )
            return row is not None

        return self._run(work, write=True)

    def revoke_grant(self, grant_id: str, tenant_id: str | None, revoked_at: str) -> StoredGrant | None:
        """See :meth:`GrantTable.revoke_grant`."""

        def work(conn: Connection) -> StoredGrant | None:
            where, params = "grant_id = ?", [grant_id]
            if tenant_id is not None:
                where, params = "grant_id = ? AND tenant_id = ?", [grant_id, tenant_id]
            self._exec(
                conn, f"UPDATE grants SET revoked_at = ? WHERE {where} AND revoked_at IS NULL", [revoked_at, *params]
            )
            row = self._one(conn, f"SELECT {_GRANT_COLUMNS} FROM grants WHERE {where}", params)
            return None if row is None else StoredGrant(*row)

        return self._run(work, write=True)

    def get_grant(self, grant_id: str) -> StoredGrant | None:
        """See :meth:`GrantTable.get_grant`."""
        row = self._read_one(f"SELECT {_GRANT_COLUMNS} FROM grants WHERE grant_id = ?", (grant_id,))
        return None if row is None else StoredGrant(*row)

    def grants_for(self, tenant_id: str, now: str) -> list[StoredGrant]:
        """See :meth:`GrantTable.grants_for`."""
        c = self.text_order
        rows = self._read_all(
            f"SELECT {_GRANT_COLUMNS} FROM grants WHERE tenant_id = ? AND expires_at{c} >= ?"
            f" ORDER BY submitted_at DESC, grant_id LIMIT {_GRANTS_PER_CALL}",
            (tenant_id, now),
        )
        return [StoredGrant(*row) for row in rows]

    def claim_nonce_with_grant(self, claim: NonceClaim, grant_id: str) -> NonceRecord | GrantRefused | int:
        """See :meth:`GrantTable.claim_nonce_with_grant`."""

        def work(conn: Connection) -> NonceRecord | GrantRefused | int:
            existing = self._claim_in(conn, claim)
            if existing is not None:
                return existing
            used = self._one(
                conn,
                "UPDATE grants SET uses = uses + 1 WHERE grant_id = ? AND tenant_id = ? AND uses < max_uses"
                " AND revoked_at IS NULL RETURNING uses",
                (grant_id, claim.tenant_id),
            )
            if used is None:
                state = self._one(
                    conn,
                    "SELECT uses, max_uses FROM grants WHERE grant_id = ? AND tenant_id = ?",
                    (grant_id, claim.tenant_id),
                )
                exhausted = state is not None and int(state[0]) >= int(state[1])
                raise Rollback(GrantRefused("exhausted" if exhausted else "revoked"))
            use = int(used[0])
            approval = json.loads(claim.approval)
            approval["use"] = use
            self._exec(
                conn,
                "UPDATE nonces SET approval = ? WHERE tenant_id = ? AND nonce = ?",
                (canonicalize(approval).decode(), claim.tenant_id, claim.nonce),
            )
            return use

        return self._claiming(work)

    def _prune_grants(self, conn: Connection, before: str) -> None:
        """Delete grants whose ``keep_until`` passed (their use counts can no longer matter)."""
        self._exec(conn, f"DELETE FROM grants WHERE keep_until{self.text_order} < ?", (before,))
