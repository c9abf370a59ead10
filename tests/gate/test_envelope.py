"""The typed result envelope (SPEC §6) is what the gate answers, and its lean schema is the outputSchema."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jsonschema
import pytest

from openexec_mcp.gate.envelope import ResultEnvelope, envelope_json_schema
from openexec_mcp.gate.pipeline import Answer, CallContext
from openexec_mcp.runtime import Runtime
from openexec_mcp.transport.schemas import envelope_schema

pytestmark = pytest.mark.anyio

CTX = CallContext(tenant_id="default", run_id="run-1")


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    return []


def test_the_envelope_schema_is_lean_inlined_and_nullable_by_type() -> None:
    schema = envelope_json_schema()
    assert _refs(schema) == [] and "anyOf" not in str(schema)
    assert schema["properties"]["exec_id"]["type"] == ["string", "null"]
    assert schema["properties"]["error"]["type"] == ["object", "null"]
    assert "receipt" not in schema["required"]
    assert set(schema["required"]) == set(ResultEnvelope.model_fields) - {"receipt"}


async def test_every_kind_of_answer_fits_the_model_and_the_advertised_schema(make_runtime: Callable[..., Runtime]):
    runtime = make_runtime()
    answers: list[Answer] = []
    for arguments in (
        {"msg": "hi", "nonce": "nonce-env-1"},  # executed
        {"msg": "hi", "nonce": "nonce-env-1"},  # replayed
        {"msg": "other", "nonce": "nonce-env-1"},  # denied, nonce_conflict (with receipt)
        {"msg": "hi"},  # invalid_request (no receipt)
    ):
        answer = await runtime.gate.call("echo", arguments, CTX)
        assert isinstance(answer, Answer)
        answers.append(answer)
    assert [a.status for a in answers] == ["executed", "replayed", "denied", "denied"]
    schema = envelope_schema(runtime.registry["echo"])
    for answer in answers:
        ResultEnvelope.model_validate(answer.envelope)
        jsonschema.validate(answer.envelope, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**answers[0].envelope, "status": "maybe"}, schema)
