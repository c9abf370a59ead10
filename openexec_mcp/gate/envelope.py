"""The result envelope of SPEC §6: what every ``tools/call`` and ``POST /execute`` answers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from openexec_mcp.errors import OpenExecError
from openexec_mcp.store.base import LedgerEntry

__all__ = ["refusal_envelope", "result_envelope"]


def result_envelope(
    entry: LedgerEntry, action: str, status: str, result: Any, error: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Return the envelope of a call whose receipt is ``entry`` (``approval_request`` unset)."""
    return {
        "status": status, "exec_id": entry.exec_id, "action": action, "result": result,
        "error": dict(error) if error is not None else None, "approval_request": None,
        "receipt": json.loads(entry.envelope), "receipt_hash": entry.receipt_hash,
    }  # fmt: skip


def refusal_envelope(name: Any, error: OpenExecError) -> dict[str, Any]:
    """Return the envelope of a call refused before anything was recorded: no exec_id, no receipt (SPEC §10)."""
    return {
        "status": "denied", "exec_id": None, "action": name if isinstance(name, str) else None, "result": None,
        "error": error.to_dict(), "approval_request": None, "receipt_hash": None,
    }  # fmt: skip
