"""The result envelope of SPEC §6: what every ``tools/call`` and ``POST /execute`` answers."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field

from openexec_mcp.errors import OpenExecError
from openexec_mcp.store.base import LedgerEntry

__all__ = [
    "ApprovalRequestRef",
    "EnvelopeError",
    "EnvelopeStatus",
    "ReceiptEnvelope",
    "ResultEnvelope",
    "envelope_json_schema",
    "refusal_envelope",
    "result_envelope",
]

EnvelopeStatus = Literal["executed", "replayed", "failed", "denied", "indeterminate"]
"""``status`` of an envelope (SPEC §6): ``indeterminate`` when sent and no answer came."""


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


# -- the typed envelope and its schema (the tool ``outputSchema``) ------------------------------

_HEX64 = r"^[0-9a-f]{64}$"


class EnvelopeError(BaseModel):
    """The envelope's ``error``: a stable code (``openexec_mcp.errors``) and a message for people."""

    code: str
    message: str


class ApprovalRequestRef(BaseModel):
    """The pending approval request a ``denied`` / ``approval_required`` answer points to (SPEC §5)."""

    request_id: str
    action_hash: str = Field(pattern=_HEX64)
    expires_at: str


class DsseSignature(BaseModel):
    """One DSSE signature: the server key id and base64 Ed25519 signature over the PAE."""

    keyid: str
    sig: str


class ReceiptEnvelope(BaseModel):
    """The receipt, a DSSE envelope whose payload is base64 of the RFC 8785 receipt body (SPEC §7)."""

    payloadType: Literal["application/vnd.openexec.receipt+json"]
    payload: str
    signatures: list[DsseSignature]


class ResultEnvelope(BaseModel):
    """The result envelope of SPEC §6, as a type: its JSON Schema is every tool's ``outputSchema``.

    The gate builds envelopes as plain dicts on the call path (no validation cost there); this
    model is their contract, for the schema and for typed readers. ``receipt`` is absent only for
    answers that recorded nothing (``invalid_request``, ``unknown_action``, admission refusals).
    """

    status: EnvelopeStatus
    exec_id: str | None
    action: str | None
    result: Any
    error: EnvelopeError | None
    approval_request: ApprovalRequestRef | None
    receipt: ReceiptEnvelope | None = None
    receipt_hash: str | None = Field(pattern=_HEX64)


def envelope_json_schema(result_schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return the lean JSON Schema of :class:`ResultEnvelope`, with ``result`` described by ``result_schema``.

    Lean means cheap for clients to validate on every call: nested models are inlined (no
    ``$ref``), ``X | None`` is ``"type": [X, "null"]`` rather than ``anyOf``, and pydantic's titles
    are dropped. ``receipt`` is not required; everything else is.

    Args:
        result_schema: The JSON Schema of the action's result (any value when ``None``); it may
            carry ``$defs``, which move to the top level.
    """
    schema = _lean(ResultEnvelope.model_json_schema(), ResultEnvelope.model_json_schema().get("$defs", {}))
    schema.pop("$defs", None)
    schema["description"] = "The result envelope (status, exec_id, result or error, and the signed receipt)."
    if result_schema:
        result = copy.deepcopy(dict(result_schema))
        defs = result.pop("$defs", None)
        schema["properties"]["result"] = _nullable(result)
        if defs:
            schema["$defs"] = defs
    else:
        schema["properties"]["result"] = {}
    return schema


def _lean(node: Any, defs: Mapping[str, Any]) -> Any:
    if isinstance(node, list):
        return [_lean(item, defs) for item in node]  # pyright: ignore[reportUnknownVariableType]
    if not isinstance(node, dict):
        return node
    item: dict[str, Any] = dict(node)  # pyright: ignore[reportUnknownArgumentType]
    ref = item.pop("$ref", None)
    if isinstance(ref, str):
        item = {**defs[ref.rsplit("/", 1)[-1]], **item}
    item.pop("title", None)
    item.pop("description", None)  # docstrings are for readers of the code, not for every client call
    item.pop("default", None)
    item.pop("$defs", None)
    item = {key: _lean(value, defs) for key, value in item.items()}
    options: list[Any] | None = item.get("anyOf")
    if isinstance(options, list) and len(options) == 2 and {"type": "null"} in options:
        other: dict[str, Any] = options[0] if options[1] == {"type": "null"} else options[1]
        del item["anyOf"]
        return {**item, **_nullable(other)}
    return item


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    # "type": [T, "null"] validates faster in clients than anyOf, and says the same: object and
    # string keywords (properties, pattern) apply only to values of their own type.
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}
