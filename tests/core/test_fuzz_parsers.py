"""Fuzzing every parser of untrusted input with hypothesis: typed errors only, never a crash.

Inputs are drawn two ways: arbitrary values (JSON-shaped objects, text, bytes) and mutations of
valid documents (a span deleted, random text inserted, a character replaced, a line doubled, the
text cut short), which reach far deeper into a parser than noise does. Each parser may only
return, or raise its documented :class:`~openexec_mcp.errors.OpenExecError` subclass:

- ``POST /execute`` (and ``/receipts/verify``, ``/approvals``) through the real ASGI app: a JSON
  answer with a typed error code, 500 only for a ``failed`` call, never a traceback;
- approval artifacts (``parse_approval_artifact``, ``verify_approval``), receipts
  (``verify_receipt``, ``parse_server_public_keys``), inclusion proofs and signed checkpoints
  (``core/proof.py``, ``core/checkpoint.py``), JSON (``parse_json``), and the config file
  (``load_settings`` from random TOML: only ``ConfigError``).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from oe_testing.approvals import GOV_KEY, GOV_KID, ISSUER, approvals_config, mint

from openexec_mcp import errors
from openexec_mcp.config import load_settings
from openexec_mcp.core.action import compute_action_hash
from openexec_mcp.core.approval import parse_approval_artifact, verify_approval
from openexec_mcp.core.canonical import parse_json
from openexec_mcp.core.keyring import Keyring, KeyringEntry
from openexec_mcp.core.receipt import ServerKey, parse_server_public_keys, sign_receipt, verify_receipt
from openexec_mcp.core.tlog.checkpoint import (
    parse_checkpoint,
    parse_note,
    sign_checkpoint,
    verify_checkpoint,
    verify_note,
)
from openexec_mcp.core.tlog.merkle import inclusion_proof, leaf_hash, root_from_leaves, subtree_hasher_from_leaves
from openexec_mcp.core.tlog.proof import format_inclusion_proof, parse_inclusion_proof, verify_inclusion_proof
from openexec_mcp.errors import ConfigError, MalformedInputError, OpenExecError, VerificationError
from openexec_mcp.runtime import Runtime
from openexec_mcp.transport.http.app import build_http_app

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SERVER_KEY = ServerKey.from_private_key(Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"fuzz").digest()))
PUBLIC_KEYS = {SERVER_KEY.kid: SERVER_KEY.public_key()}
ORIGIN = "openexec-mcp"
KNOWN_CODES = {
    cls.code for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, OpenExecError)
} - {"internal_error"}

# -- strategies ---------------------------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=25,
)
noise = st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1"))


@st.composite
def mutated(draw: st.DrawFn, valid: str) -> str:
    """``valid`` after one to three random edits."""
    text = valid
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        edit = draw(st.sampled_from(["delete", "insert", "replace", "double_line", "truncate"]))
        at = draw(st.integers(min_value=0, max_value=len(text)))
        if edit == "delete":
            text = text[:at] + text[at + draw(st.integers(min_value=1, max_value=16)) :]
        elif edit == "insert":
            text = (
                text[:at]
                + draw(st.text(max_size=8) | st.sampled_from(["\n", "\x00", "\r\n", " ", "=", "—"]))
                + text[at:]
            )
        elif edit == "replace" and at < len(text):
            text = text[:at] + draw(st.characters()) + text[at + 1 :]
        elif edit == "double_line":
            lines = text.split("\n")
            index = draw(st.integers(min_value=0, max_value=len(lines) - 1))
            text = "\n".join([*lines[: index + 1], lines[index], *lines[index + 1 :]])
        else:
            text = text[:at]
    return text


def mutated_json(valid: Any) -> st.SearchStrategy[Any]:
    """Mutations of ``valid``'s JSON text, kept when they still parse (the structure-aware half)."""

    def reparse(text: str) -> Any:
        try:
            return json.loads(text)
        except ValueError:
            return text

    return mutated(json.dumps(valid)).map(reparse)


def field_swaps(valid: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``valid`` with one field removed or given an arbitrary JSON value."""
    return st.tuples(st.sampled_from(sorted(valid)), st.booleans(), json_values).map(
        lambda change: (
            {k: v for k, v in valid.items() if k != change[0]} if change[1] else {**valid, change[0]: change[2]}
        )
    )


def assert_typed(call: Callable[[], Any], *allowed: type[OpenExecError]) -> None:
    """``call`` returns, or raises one of ``allowed`` with a known code and a one-line message."""
    try:
        call()
    except allowed as exc:
        assert exc.code in KNOWN_CODES
        assert isinstance(exc.message, str) and "Traceback" not in exc.message


# -- JSON ---------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=300) | noise | mutated('{"a": [1, 2.5, "x", null, true], "b": {"c": -0.0}}'))
def test_parse_json_only_raises_malformed_input(data: bytes | str) -> None:
    assert_typed(lambda: parse_json(data, max_depth=8, max_bytes=256), MalformedInputError)


@FUZZ
@given(st.integers(min_value=1, max_value=64))
def test_parse_json_refuses_deep_nesting_with_a_typed_error(depth: int) -> None:
    text = "[" * depth * 20 + "]" * depth * 20
    assert_typed(lambda: parse_json(text, max_depth=32), MalformedInputError)


# -- approval artifacts ---------------------------------------------------------------------------

ACTION_HASH = "ab" * 32
NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
VALID_ARTIFACT = mint(ACTION_HASH, now=NOW)
KEYRING = Keyring(
    [KeyringEntry(kid=GOV_KID, alg="ed25519", key=GOV_KEY.public_key().public_bytes_raw(), issuers=frozenset({ISSUER}))]
)
artifacts = json_values | mutated_json(VALID_ARTIFACT) | field_swaps(VALID_ARTIFACT)


@FUZZ
@given(artifacts)
def test_parse_approval_artifact_only_raises_approval_malformed(artifact: Any) -> None:
    try:
        parse_approval_artifact(artifact)
    except errors.ApprovalError as exc:
        assert exc.code == "approval_malformed"


@FUZZ
@given(artifacts, st.integers(min_value=-(10**6), max_value=10**6))
def test_verify_approval_only_raises_approval_errors(artifact: Any, shift_seconds: int) -> None:
    assert_typed(
        lambda: verify_approval(
            artifact,
            keyring=KEYRING,
            action_hash=ACTION_HASH,
            tenant_id="default",
            audience=ORIGIN,
            now=NOW + timedelta(seconds=shift_seconds),
            clock_skew_seconds=60,
            max_ttl_seconds=300,
            min_issued_at=NOW - timedelta(days=1),
        ),
        errors.ApprovalError,
    )


def test_the_valid_artifact_still_verifies() -> None:
    verified = verify_approval(
        VALID_ARTIFACT,
        keyring=KEYRING,
        action_hash=ACTION_HASH,
        tenant_id="default",
        audience=ORIGIN,
        now=NOW,
        clock_skew_seconds=60,
        max_ttl_seconds=300,
    )
    assert verified.approval_id == VALID_ARTIFACT["approval_id"]


# -- receipts --------------------------------------------------------------------------------------

RECEIPT = sign_receipt(
    {
        "v": 1,
        "exec_id": "e" * 32,
        "seq": 3,
        "prev": "f" * 64,
        "log_id": ORIGIN,
        "tenant_id": "default",
        "action": "echo",
        "action_hash": ACTION_HASH,
        "nonce": "nonce-123",
        "run_id": "run-1",
        "status": "executed",
        "error_code": None,
        "approval": {"method": "auto", "approval_id": None, "kid": None, "issued_by": None, "artifact_hash": None},
        "result_hash": "c" * 64,
        "original_exec_id": None,
        "policy_hash": "d" * 64,
        "started_at": "2026-11-21T10:00:00.000Z",
        "finished_at": "2026-11-21T10:00:00.001Z",
        "server": {"name": "openexec-mcp", "version": "test"},
    },
    SERVER_KEY,
)


def receipt_variants() -> st.SearchStrategy[Any]:
    envelope = RECEIPT.envelope
    payload = json.loads(base64.b64decode(envelope["payload"]))

    def with_body(body: Any) -> dict[str, Any]:
        raw = json.dumps(body).encode() if not isinstance(body, str) else body.encode("utf-8", "surrogatepass")
        return {**envelope, "payload": base64.b64encode(raw).decode()}

    return (
        json_values
        | mutated_json(envelope)
        | field_swaps(envelope)
        | mutated(json.dumps(payload)).map(with_body)
        | field_swaps(payload).map(with_body)
    )


@FUZZ
@given(receipt_variants())
def test_verify_receipt_only_raises_typed_errors(envelope: Any) -> None:
    assert_typed(lambda: verify_receipt(envelope, PUBLIC_KEYS), VerificationError, MalformedInputError)


def test_the_valid_receipt_still_verifies() -> None:
    assert verify_receipt(RECEIPT.envelope, PUBLIC_KEYS)["seq"] == 3


KEYS_DOCUMENT = json.dumps(
    {
        "keys": [
            {"kid": SERVER_KEY.kid, "alg": "Ed25519", "public_key": base64.b64encode(SERVER_KEY.public_raw).decode()}
        ]
    }
)


@FUZZ
@given(noise | mutated(KEYS_DOCUMENT))
def test_parse_server_public_keys_only_raises_malformed_input(text: str) -> None:
    assert_typed(lambda: parse_server_public_keys(text), MalformedInputError)


# -- checkpoints and inclusion proofs -----------------------------------------------------------

LEAVES = [leaf_hash(bytes([i])) for i in range(7)]
CHECKPOINT = sign_checkpoint(ORIGIN, len(LEAVES), root_from_leaves(LEAVES), SERVER_KEY.private_key)
PROOF = format_inclusion_proof(5, inclusion_proof(5, 7, subtree_hasher_from_leaves(LEAVES)), CHECKPOINT)


@FUZZ
@given(noise | mutated(CHECKPOINT))
def test_checkpoint_parsers_only_raise_typed_errors(note: str) -> None:
    assert_typed(lambda: parse_note(note), MalformedInputError)
    assert_typed(lambda: parse_checkpoint(note), MalformedInputError)
    assert_typed(lambda: verify_note(note, ORIGIN, SERVER_KEY.public_key()), VerificationError)
    assert_typed(lambda: verify_checkpoint(note, ORIGIN, SERVER_KEY.public_key()), VerificationError)
    assert_typed(lambda: parse_checkpoint(note.encode("utf-8", "surrogatepass")), MalformedInputError)


@FUZZ
@given(noise | mutated(PROOF), st.none() | st.integers(min_value=-2, max_value=10))
def test_inclusion_proof_parsers_only_raise_typed_errors(text: str, index: int | None) -> None:
    assert_typed(lambda: parse_inclusion_proof(text), MalformedInputError)
    assert_typed(
        lambda: verify_inclusion_proof(text, LEAVES[5], ORIGIN, SERVER_KEY.public_key(), index=index), VerificationError
    )


def test_the_valid_proof_and_checkpoint_still_verify() -> None:
    assert verify_inclusion_proof(PROOF, LEAVES[5], ORIGIN, SERVER_KEY.public_key(), index=5).size == 7
    assert verify_checkpoint(CHECKPOINT, ORIGIN, SERVER_KEY.public_key()).size == 7


# -- config ----------------------------------------------------------------------------------------

EXAMPLE_CONFIG = (Path(__file__).parents[2] / "config.example.toml").read_text()
toml_keys = st.sampled_from(
    [
        "mode",
        "server_id",
        "tenant_id",
        "state_dir",
        "storage",
        "limits",
        "nonce",
        "approvals",
        "auth",
        "mcp",
        "toolsets",
        "policy",
        "actions",
        "unknown",
    ]
)
toml_scalars = (
    st.integers().map(str)
    | st.floats().map(repr)
    | st.text(max_size=20).map(lambda t: json.dumps(t))
    | st.sampled_from(["true", "false", "[]", "{}", "1979-05-27T07:32:00Z", "'''x'''", "0x_1", "1e999"])
)


@st.composite
def toml_documents(draw: st.DrawFn) -> str:
    lines: list[str] = []
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        key = draw(toml_keys)
        if draw(st.booleans()):
            lines.append(f"{key} = {draw(toml_scalars)}")
        else:
            lines.append(f"[{key}]")
            sub = draw(st.sampled_from(["url", "max_depth", "retention_seconds", "keys", "tokens", "modules", "x"]))
            lines.append(f"{sub} = {draw(toml_scalars)}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def config_path(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "fuzz.toml"


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(toml_documents() | mutated(EXAMPLE_CONFIG) | noise)
def test_load_settings_from_random_toml_only_raises_config_error(config_path: Path, text: str) -> None:
    config_path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_settings(config_path)
    except ConfigError as exc:
        event(f"refused: {exc.message.split(':')[0][:40]}")
    else:
        event("accepted")


# -- HTTP bodies through the real app ----------------------------------------------------------------

ACTIONS = ["echo", "add", "count", "boom", "not_json", "no_such_action", 7, None]
nonces = st.sampled_from(["nonce-0001", "nonce-0002", "x", ""]) | st.text(max_size=20) | json_values


@st.composite
def execute_bodies(draw: st.DrawFn) -> Any:
    body: dict[str, Any] = {
        "action": draw(st.sampled_from(ACTIONS) | st.text(max_size=10)),
        "payload": draw(
            st.fixed_dictionaries({"a": scalars, "b": scalars})
            | st.dictionaries(st.text(max_size=8), json_values)
            | json_values
        ),
        "nonce": draw(nonces),
    }
    if draw(st.booleans()):
        body["approval_artifact"] = draw(artifacts)
    if draw(st.booleans()):
        body["run_id"] = draw(st.text(max_size=10) | json_values)
    return draw(st.just(body) | field_swaps(body))


finite = st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1) | st.floats(min_value=-1e15, max_value=1e15)
PAYLOADS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "echo": st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    "add": st.fixed_dictionaries({"a": finite, "b": finite}),
    "count": st.fixed_dictionaries({"label": st.text(max_size=10)}),
    "boom": st.just({}),
    "not_json": st.just({}),
}


@st.composite
def plausible_calls(draw: st.DrawFn) -> dict[str, Any]:
    """Calls that pass validation: from a few nonces (so replays and conflicts happen), and for the
    ``signed`` action ``count`` with a valid artifact, a tampered one, or none."""
    action = draw(st.sampled_from(sorted(PAYLOADS)))
    payload = draw(PAYLOADS[action])
    nonce = draw(st.sampled_from([f"nonce-{i:04d}" for i in range(40)]))
    body: dict[str, Any] = {"action": action, "payload": payload, "nonce": nonce}
    if action == "count" and draw(st.booleans()):
        valid = mint(compute_action_hash(action, payload, nonce))
        body["approval_artifact"] = draw(st.just(valid) | field_swaps(valid) | mutated_json(valid))
    return body


other_bodies = (
    execute_bodies().map(lambda body: json.dumps(body).encode())
    | mutated(json.dumps({"action": "echo", "payload": {"msg": "hi"}, "nonce": "nonce-0001"})).map(
        lambda t: t.encode("utf-8", "surrogatepass")
    )
    | st.binary(max_size=200)
)
# Half the bodies are plausible calls that get past validation, deep into the gate.
raw_bodies = st.booleans().flatmap(
    lambda plausible: plausible_calls().map(lambda body: json.dumps(body).encode()) if plausible else other_bodies
)


@pytest.fixture
def app_runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime(approvals=approvals_config(), policy={"actions": {"count": {"approval": "signed"}}})


def post(runtime: Runtime, path: str, body: bytes) -> httpx.Response:
    async def send() -> httpx.Response:
        app = build_http_app(runtime, host="127.0.0.1", port=8000)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.post(path, content=body, headers={"content-type": "application/json"})

    return anyio.run(send)


def assert_clean_answer(response: httpx.Response) -> dict[str, Any]:
    assert "Traceback" not in response.text and 'File "' not in response.text
    document = response.json()
    assert isinstance(document, dict)
    return document


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(raw_bodies)
def test_execute_answers_every_body_with_a_typed_json_envelope(app_runtime: Runtime, body: bytes) -> None:
    response = post(app_runtime, "/execute", body)
    envelope = assert_clean_answer(response)
    event(f"{response.status_code} {envelope['status']} {(envelope['error'] or {}).get('code')}")
    assert envelope["status"] in {"executed", "replayed", "failed", "denied"}
    assert response.status_code in {200, 403, 404, 409, 422, 429, 500, 503}
    if response.status_code == 500:
        assert envelope["status"] == "failed"
    if envelope["status"] in ("executed", "replayed"):
        assert response.status_code == 200 and envelope["error"] is None
    else:
        assert envelope["error"]["code"] in KNOWN_CODES, envelope
    error = envelope["error"] or {}
    if envelope["status"] != "denied" or error.get("code") not in ("invalid_request", "unknown_action"):
        assert envelope["receipt_hash"] is not None  # recorded: it has a receipt


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(receipt_variants().map(lambda e: json.dumps(e).encode()) | st.binary(max_size=100))
def test_receipts_verify_answers_every_body_with_a_verdict(app_runtime: Runtime, body: bytes) -> None:
    response = post(app_runtime, "/receipts/verify", body)
    verdict = assert_clean_answer(response)
    assert response.status_code in {200, 422}
    assert verdict["valid"] in (True, False)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(artifacts.map(lambda a: json.dumps(a).encode()) | st.binary(max_size=100))
def test_approvals_answers_every_artifact_with_a_typed_code(app_runtime: Runtime, body: bytes) -> None:
    response = post(app_runtime, "/approvals", body)
    answer = assert_clean_answer(response)
    assert response.status_code in {200, 201, 403, 422}
    if response.status_code >= 400:
        assert answer["error"]["code"] in KNOWN_CODES
