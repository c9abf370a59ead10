"""The ``/ledger/*`` routes of SPEC §8: checkpoints, inclusion proofs, consistency proofs.

- ``GET /ledger/checkpoint``: the latest checkpoint, a C2SP signed note (``text/plain``), covering
  every receipt committed before the request (SPEC §10), followed by every witness cosignature
  collected for it (SPEC §14). ``?witnessed=1``: instead, the largest checkpoint that reached
  ``ledger.witness_quorum`` cosignatures (404 while there is none).
- ``GET /ledger/proof/{exec_id}``: the C2SP ``tlog-proof`` of that receipt (``text/plain``);
  404 when the ledger holds no such receipt (or, with bearer tokens, it is another tenant's).
  With witnesses, the proof is against the largest witnessed checkpoint that covers the receipt,
  when there is one, with its cosignatures.
- ``GET /ledger/consistency?from=OLD[&to=NEW]``: ``{"from", "to", "proof": [base64 hashes],
  "checkpoint"}``, the RFC 9162 consistency proof from tree size OLD to NEW; without ``to``, NEW
  is the size of a fresh checkpoint, returned as ``checkpoint`` (else ``null``). 422 for sizes
  that are not ``0 < OLD <= NEW <= ledger size``.

Everything runs on a worker thread: each answer costs O(log n) stored hashes and at most one
signature.
"""

from __future__ import annotations

from typing import Final

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from openexec_mcp.core.encoding import b64encode
from openexec_mcp.core.tlog.checkpoint import parse_checkpoint
from openexec_mcp.core.tlog.merkle import MAX_TREE_SIZE
from openexec_mcp.core.tlog.proof import format_inclusion_proof
from openexec_mcp.ledger.checkpoints import Ledger
from openexec_mcp.ledger.witnessing import Witnessing
from openexec_mcp.store.base import LedgerEntry, Store

__all__ = ["LedgerRoutes"]

_NOTE_TYPE: Final = "text/plain; charset=utf-8"


def _size_parameter(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    if not value.isascii() or not value.isdecimal() or len(value) > 19 or int(value) > MAX_TREE_SIZE:
        raise ValueError(f"'{name}' must be a tree size, a decimal integer")
    return int(value)


def _invalid(message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": "invalid_request", "message": message}}, status_code=422)


class LedgerRoutes:
    """Handlers ``(request, tenant_id) -> Response`` for the routes above.

    Args:
        ledger: The runtime's ledger service.
        store: The store (for look-ups by exec_id).
        witnessing: The witnessing service, when witnesses are configured (SPEC §14).
    """

    def __init__(self, ledger: Ledger, store: Store, witnessing: Witnessing | None = None) -> None:
        self.ledger = ledger
        self.store = store
        self.witnessing = witnessing

    async def checkpoint(self, request: Request, tenant_id: str | None) -> Response:
        """``GET /ledger/checkpoint[?witnessed=1]``."""
        witnessing = self.witnessing
        if witnessing is not None and request.query_params.get("witnessed") in ("1", "true"):
            note = await anyio.to_thread.run_sync(witnessing.witnessed)
            if note is None:
                body = {"error": {"code": "not_found", "message": "no checkpoint has reached the witness quorum yet"}}
                return JSONResponse(body, status_code=404)
            return PlainTextResponse(note, media_type=_NOTE_TYPE)
        checkpoint = await anyio.to_thread.run_sync(self.ledger.checkpoint)
        if witnessing is not None:
            note = await anyio.to_thread.run_sync(witnessing.decorate, checkpoint)
        else:
            note = checkpoint.note
        return PlainTextResponse(note, media_type=_NOTE_TYPE)

    def _proof_text(self, entry: LedgerEntry) -> str:
        if self.witnessing is not None and (note := self.witnessing.witnessed(entry.seq + 1)) is not None:
            size = parse_checkpoint(note).size
            return format_inclusion_proof(entry.seq, self.ledger.inclusion_proof(entry.seq, size), note)
        return self.ledger.proof_text(entry)

    async def proof(self, request: Request, tenant_id: str | None) -> Response:
        """``GET /ledger/proof/{exec_id}``."""
        exec_id = request.path_params["exec_id"]
        entry = await anyio.to_thread.run_sync(self.store.get_entry, exec_id)
        if entry is None or (tenant_id is not None and entry.tenant_id != tenant_id):
            body = {"error": {"code": "not_found", "message": "the ledger holds no receipt with this exec_id"}}
            return JSONResponse(body, status_code=404)
        text = await anyio.to_thread.run_sync(self._proof_text, entry)
        return PlainTextResponse(text, media_type=_NOTE_TYPE)

    async def consistency(self, request: Request, tenant_id: str | None) -> Response:
        """``GET /ledger/consistency?from=OLD[&to=NEW]``."""
        try:
            old_size, new_size = _size_parameter(request, "from"), _size_parameter(request, "to")
            if old_size is None:
                raise ValueError("'from' (the tree size of the checkpoint you hold) is required")
            answer = await anyio.to_thread.run_sync(self.ledger.consistency, old_size, new_size)
        except ValueError as exc:
            return _invalid(str(exc))
        return JSONResponse(
            {
                "from": answer.old_size,
                "to": answer.new_size,
                "proof": [b64encode(value) for value in answer.proof],
                "checkpoint": answer.checkpoint.note if answer.checkpoint is not None else None,
            }
        )
