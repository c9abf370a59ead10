"""JSON Schemas advertised in ``tools/list``: the tool input and the result envelope (SPEC §1, §6)."""

from __future__ import annotations

from typing import Any

from openexec_mcp.gate.envelope import envelope_json_schema
from openexec_mcp.registry import Action

__all__ = ["NONCE_SCHEMA", "envelope_schema", "input_schema"]

NONCE_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 8,
    "maxLength": 128,
    "pattern": "^[A-Za-z0-9._:-]{8,128}$",
    "description": "A fresh unique value per intended action; re-sending it replays the first result.",
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
    """Return the tool ``outputSchema``: the schema of :class:`~openexec_mcp.gate.envelope.ResultEnvelope`.

    ``result`` is the action's output model, or any value when it declares none.
    """
    if action.output_model is None:
        return envelope_json_schema()
    return envelope_json_schema(action.output_model.model_json_schema(mode="serialization"))
