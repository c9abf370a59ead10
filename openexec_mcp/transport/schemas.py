"""JSON Schemas advertised in ``tools/list``: the tool input and the result envelope (SPEC §1, §6)."""

from __future__ import annotations

import copy
from typing import Any

from openexec_mcp.core.receipt import RECEIPT_PAYLOAD_TYPE
from openexec_mcp.registry import Action

__all__ = ["NONCE_SCHEMA", "envelope_schema", "input_schema"]

NONCE_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 8,
    "maxLength": 128,
    "pattern": "^[A-Za-z0-9._:-]{8,128}$",
    "description": "A fresh unique value per intended action; re-sending it replays the first result.",
}

_NULLABLE_STRING: dict[str, Any] = {"type": ["string", "null"]}
_HEX64: dict[str, Any] = {"type": "string", "pattern": "^[0-9a-f]{64}$"}

_RECEIPT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "DSSE envelope; payload is base64 of the RFC 8785 receipt body (SPEC §7).",
    "properties": {
        "payloadType": {"const": RECEIPT_PAYLOAD_TYPE},
        "payload": {"type": "string"},
        "signatures": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"keyid": {"type": "string"}, "sig": {"type": "string"}},
                "required": ["keyid", "sig"],
            },
        },
    },
    "required": ["payloadType", "payload", "signatures"],
}


def input_schema(action: Action) -> dict[str, Any]:
    """Return the tool ``inputSchema``: the action's payload schema plus the reserved ``nonce`` (SPEC §1, §11).

    The nonce is required unless the action lets the server supply one (``nonce_required`` false);
    a tool that declares its own ``nonce`` keeps it, and the gate's nonce comes in ``_meta``.
    """
    schema = action.input_schema()
    if action.declares_nonce:
        return schema  # the tool's own nonce argument; the gate's nonce comes in _meta (SPEC §11)
    schema["properties"] = {**schema.get("properties", {}), "nonce": NONCE_SCHEMA}
    if action.nonce_required:
        schema["required"] = [*schema.get("required", []), "nonce"]
    return schema


def envelope_schema(action: Action) -> dict[str, Any]:
    """Return the tool ``outputSchema``: the result envelope, with the action's result schema."""
    defs: dict[str, Any] = {}
    if action.output_model is not None:
        result = copy.deepcopy(action.output_model.model_json_schema(mode="serialization"))
        defs = result.pop("$defs", {})
        # "type": [object, null] validates faster in clients than anyOf, and says the same:
        # object keywords (properties, required) apply only when the value is an object.
        result_schema: dict[str, Any] = (
            {**result, "type": ["object", "null"]}
            if result.get("type") == "object"
            else {"anyOf": [result, {"type": "null"}]}
        )
    else:
        result_schema = {}
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "status": {"enum": ["executed", "replayed", "failed", "denied", "indeterminate"]},
            "exec_id": _NULLABLE_STRING,
            "action": _NULLABLE_STRING,
            "result": result_schema,
            "error": {
                "type": ["object", "null"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                "required": ["code", "message"],
            },
            "approval_request": {
                "type": ["object", "null"],
                "properties": {
                    "request_id": {"type": "string"},
                    "action_hash": _HEX64,
                    "expires_at": {"type": "string"},
                },
                "required": ["request_id", "action_hash", "expires_at"],
            },
            "receipt": _RECEIPT_SCHEMA,
            "receipt_hash": {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"},
        },
        "required": ["status", "exec_id", "action", "result", "error", "approval_request", "receipt_hash"],
    }
    if defs:
        schema["$defs"] = defs
    return schema
