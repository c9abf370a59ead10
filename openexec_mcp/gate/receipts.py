"""Receipt bodies for the ledger (SPEC §7), from a call's facts and its outcome.

:class:`CallFacts` is the frozen record of what the gate established about a call before it ran
(who, what, which nonce, which run, when). :class:`ReceiptWriter` turns facts and an outcome into
a :data:`~openexec_mcp.store.base.ReceiptFactory`: the store calls it inside the append
transaction with ``(seq, prev)``, so every body is signed knowing its place in the hash chain.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal, cast

from openexec_mcp import __version__
from openexec_mcp.core.canonical import canonicalize
from openexec_mcp.core.clock import format_timestamp
from openexec_mcp.core.nonce import NonceRecord
from openexec_mcp.core.receipt import ServerKey, SignedReceipt, sign_receipt
from openexec_mcp.store.base import Outcome, ReceiptFactory

__all__ = ["SERVER_INFO", "CallFacts", "NonceSource", "ReceiptStatus", "ReceiptWriter"]

SERVER_INFO: Mapping[str, str] = {"name": "openexec-mcp", "version": __version__}
"""The receipts' ``server`` object."""

NonceSource = Literal["client", "server"]
ReceiptStatus = Literal["executed", "failed", "denied", "replayed", "indeterminate"]


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What the gate knows about one call before it runs: the per-call fields of its receipts.

    Attributes:
        exec_id: 32 hex, new for every attempt (a replay gets its own).
        tenant_id: From the bearer token, else the configured tenant.
        action: The advertised tool name.
        action_hash: 64 hex, SHA-256 of the JCS action request (SPEC §3).
        nonce: The idempotency key within the tenant (SPEC §4).
        nonce_source: ``client`` (sent by the caller) or ``server`` (generated for a
            ``nonce = "optional"`` upstream call that came without one, SPEC §11).
        run_id: The caller's run (SPEC §7).
        started_at: RFC 3339 UTC (ms).
        upstream: ``{"name", "server": {"name", "version"}}`` for upstream tools, else ``None``.
    """

    exec_id: str
    tenant_id: str
    action: str
    action_hash: str
    nonce: str
    nonce_source: NonceSource
    run_id: str
    started_at: str
    upstream: Mapping[str, Any] | None = None

    def extra_text(self) -> str:
        """Return the JCS text of the fields stored with the nonce claim (``NonceClaim.extra``)."""
        if self.upstream is None:
            return _EXTRA_TEXT[self.nonce_source]  # canonicalized once, at import
        return canonicalize({"nonce_source": self.nonce_source, "upstream": dict(self.upstream)}).decode()

    @classmethod
    def of_record(cls, record: NonceRecord, *, exec_id: str, started_at: str) -> CallFacts:
        """Return the facts of a recorded call, under a (possibly new) ``exec_id``.

        Rows written before ``extra`` existed hold client nonces of built-in actions.
        """
        extra: dict[str, Any] = json.loads(record.extra) if record.extra else {}
        return cls(
            exec_id=exec_id,
            tenant_id=record.tenant_id,
            action=record.action,
            action_hash=record.action_hash,
            nonce=record.nonce,
            nonce_source=extra.get("nonce_source", "client"),
            run_id=record.run_id,
            started_at=started_at,
            upstream=extra.get("upstream"),
        )

    def with_exec_id(self, exec_id: str) -> CallFacts:
        """Return the same facts under another ``exec_id``."""
        return replace(self, exec_id=exec_id)


class ReceiptWriter:
    """Builds signed receipts for one server process.

    Args:
        server_key: Signs every receipt.
        server_id: The receipts' ``log_id``.
        policy_hash: The frozen policy's hash, stamped on every receipt.
        clock: The current aware UTC time.
    """

    def __init__(
        self, *, server_key: ServerKey, server_id: str, policy_hash: str, clock: Callable[[], datetime]
    ) -> None:
        self._server_key = server_key
        self._server_id = server_id
        self._policy_hash = policy_hash
        self._clock = clock

    def factory(
        self,
        facts: CallFacts,
        *,
        status: ReceiptStatus,
        error_code: str | None,
        approval: Mapping[str, Any],
        result_hash: str | None,
        original_exec_id: str | None,
        finished_at: str,
    ) -> ReceiptFactory:
        """Return the factory of one receipt (SPEC §7 body fields).

        Args:
            facts: The call.
            status: ``executed``, ``failed``, ``denied``, ``replayed`` or ``indeterminate``.
            error_code: The stable error code, or ``None``.
            approval: The receipt's ``approval`` object (SPEC §7, §10).
            result_hash: SHA-256 hex of JCS(result), or ``None``.
            original_exec_id: For replays and operator decisions, the call they answer for.
            finished_at: RFC 3339 UTC (ms).
        """
        fields: dict[str, Any] = {
            "v": 1,
            "exec_id": facts.exec_id,
            "log_id": self._server_id,
            "tenant_id": facts.tenant_id,
            "action": facts.action,
            "action_hash": facts.action_hash,
            "nonce": facts.nonce,
            "nonce_source": facts.nonce_source,
            "run_id": facts.run_id,
            "status": status,
            "error_code": error_code,
            "approval": dict(approval),
            "result_hash": result_hash,
            "original_exec_id": original_exec_id,
            "policy_hash": self._policy_hash,
            "started_at": facts.started_at,
            "finished_at": finished_at,
            "server": dict(SERVER_INFO),
        }
        if facts.upstream is not None:
            fields["upstream"] = dict(facts.upstream)

        def make(seq: int, prev: str | None) -> SignedReceipt:
            return sign_receipt({**fields, "seq": seq, "prev": prev}, self._server_key)

        return make

    def now(self) -> str:
        """Return the current time as a receipt timestamp (RFC 3339 UTC, ms)."""
        return format_timestamp(self._clock())

    def for_indeterminate(self, record: NonceRecord) -> ReceiptFactory:
        """Return the factory for a call found ``started`` at start-up: status ``indeterminate`` (SPEC §4)."""
        return self.factory(
            CallFacts.of_record(record, exec_id=record.exec_id, started_at=record.started_at),
            status="indeterminate",
            error_code="outcome_unknown",
            approval=json.loads(record.approval),
            result_hash=None,
            original_exec_id=None,
            finished_at=self.now(),
        )

    def for_resolution(self, record: NonceRecord, *, exec_id: str, started_at: str, outcome: Outcome) -> ReceiptFactory:
        """Return the factory of an operator's decision on the ``indeterminate`` call ``record``.

        The receipt is the call's own (tenant, action, action_hash, nonce, run, approval) with a new
        ``exec_id``, the decision's ``outcome`` and ``original_exec_id`` naming the cut-off call.
        """
        return self.factory(
            CallFacts.of_record(record, exec_id=exec_id, started_at=started_at),
            status=cast(ReceiptStatus, outcome.status),
            error_code=outcome.error_code,
            approval=json.loads(record.approval),
            result_hash=outcome.result_hash,
            original_exec_id=record.exec_id,
            finished_at=outcome.finished_at,
        )


_EXTRA_TEXT: dict[str, str] = {
    source: canonicalize({"nonce_source": source}).decode() for source in ("client", "server")
}
"""``NonceClaim.extra`` of a call without an upstream, per ``nonce_source``."""
