"""Receipt bodies for the ledger (SPEC §7), around the fields the gate knows about a call.

:class:`ReceiptWriter` turns a call's fields and its outcome into a
:data:`~openexec_mcp.store.base.ReceiptFactory`: the store calls it inside the append transaction
with ``(seq, prev)``, so every body is signed knowing its place in the hash chain.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from openexec_mcp import __version__
from openexec_mcp.core.clock import format_timestamp
from openexec_mcp.core.nonce import NonceRecord
from openexec_mcp.core.receipt import ServerKey, SignedReceipt, sign_receipt
from openexec_mcp.store.base import Outcome, ReceiptFactory

__all__ = ["SERVER_INFO", "ReceiptWriter", "call_fields"]

SERVER_INFO: Mapping[str, str] = {"name": "openexec-mcp", "version": __version__}
"""The receipts' ``server`` object."""


def call_fields(record: NonceRecord, *, exec_id: str, started_at: str) -> dict[str, Any]:
    """Return the per-call receipt fields of a recorded call, under a (possibly new) ``exec_id``."""
    return {
        "exec_id": exec_id, "tenant_id": record.tenant_id, "action": record.action,
        "action_hash": record.action_hash, "nonce": record.nonce, "run_id": record.run_id,
        "started_at": started_at,
    }  # fmt: skip


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
        self, fields: Mapping[str, Any], *, status: str, error_code: str | None, approval: Mapping[str, Any],
        result_hash: str | None, original_exec_id: str | None, finished_at: str,
    ) -> ReceiptFactory:  # fmt: skip
        """Return the factory of one receipt.

        Args:
            fields: ``exec_id``, ``tenant_id``, ``action``, ``action_hash``, ``nonce``, ``run_id``,
                ``started_at`` of the call.
            status: ``executed``, ``failed``, ``denied``, ``replayed`` or ``indeterminate``.
            error_code: The stable error code, or ``None``.
            approval: The receipt's ``approval`` object (SPEC §7, §10).
            result_hash: SHA-256 hex of JCS(result), or ``None``.
            original_exec_id: For replays and operator decisions, the call they answer for.
            finished_at: RFC 3339 UTC (ms).
        """

        def make(seq: int, prev: str | None) -> SignedReceipt:
            body = {
                "v": 1, **fields, "seq": seq, "prev": prev, "log_id": self._server_id, "status": status,
                "error_code": error_code, "approval": dict(approval), "result_hash": result_hash,
                "original_exec_id": original_exec_id, "policy_hash": self._policy_hash,
                "finished_at": finished_at, "server": dict(SERVER_INFO),
            }  # fmt: skip
            return sign_receipt(body, self._server_key)

        return make

    def for_indeterminate(self, record: NonceRecord) -> ReceiptFactory:
        """Return the factory for a call found ``started`` at start-up: status ``indeterminate`` (SPEC §4)."""
        return self.factory(
            call_fields(record, exec_id=record.exec_id, started_at=record.started_at), status="indeterminate",
            error_code="outcome_unknown", approval=json.loads(record.approval), result_hash=None,
            original_exec_id=None, finished_at=format_timestamp(self._clock()),
        )  # fmt: skip

    def for_resolution(self, record: NonceRecord, *, exec_id: str, started_at: str, outcome: Outcome) -> ReceiptFactory:
        """Return the factory of an operator's decision on the ``indeterminate`` call ``record``.

        The receipt is the call's own (tenant, action, action_hash, nonce, run, approval) with a new
        ``exec_id``, the decision's ``outcome`` and ``original_exec_id`` naming the cut-off call.
        """
        return self.factory(
            call_fields(record, exec_id=exec_id, started_at=started_at), status=outcome.status,
            error_code=outcome.error_code, approval=json.loads(record.approval), result_hash=outcome.result_hash,
            original_exec_id=record.exec_id, finished_at=outcome.finished_at,
        )  # fmt: skip
