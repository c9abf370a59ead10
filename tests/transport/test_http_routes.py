"""The HTTP routes of SPEC §8: status codes, strict JSON ingress, receipt verification.

Most tests drive the real Starlette app in process (``httpx.ASGITransport``; the lifespan, needed
only by ``/mcp``, is not run) on a fresh SQLite runtime per test; the last ones talk to a real
``serve --transport http`` subprocess over a loopback socket. Receipts are checked with the
independent verifier of ``oe_testing.verifier`` and the key from ``GET /keys``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import module_env, server_env
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from oe_testing import verifier
from oe_testing.actions import executions
from oe_testing.http_server import HttpServer, app_client, running_http_server
from oe_testing.nonces import fresh_nonce
from oe_testing.processes import run_cli

from openexec_mcp import __version__
from openexec_mcp.runtime import Runtime

QUICKSTART = {"action": "echo", "payload": {"msg": "hello world"}, "nonce": "unique-1"}
ENVELOPE_FIELDS = {"status", "exec_id", "action", "result", "error", "approval_request", "receipt", "receipt_hash"}


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime()


@pytest.fixture
async def http(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(runtime) as client:
        yield client


async def execute(http: httpx.AsyncClient, action: str, payload: dict[str, Any], nonce: str) -> httpx.Response:
    return await http.post("/execute", json={"action": action, "payload": payload, "nonce": nonce})


async def ledger_size(http: httpx.AsyncClient) -> int:
    size: int = (await http.get("/health")).json()["ledger_size"]
    return size


async def keys_document(http: httpx.AsyncClient) -> dict[str, Any]:
    document: dict[str, Any] = (await http.get("/keys")).json()
    return document


# -- GET routes --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_index_names_service_version_and_mode(http: httpx.AsyncClient) -> None:
    response = await http.get("/")
    assert response.status_code == 200
    assert response.json() == {"service": "openexec-mcp", "version": __version__, "mode": "demo"}


@pytest.mark.anyio
async def test_health_reports_mode_verification_policy_hash_ledger_size_and_storage(
    http: httpx.AsyncClient, runtime: Runtime
) -> None:
    response = await http.get("/health")
    assert response.status_code == 200
    health = response.json()
    assert health["status"] == "ok"
    assert health["mode"] == "demo"
    assert health["signature_verification"] == "off"
    assert health["policy_hash"] == runtime.policy.policy_hash
    assert verifier.HEX64.match(health["policy_hash"])
    assert health["storage"] == "sqlite"
    assert health["ledger_size"] == 0
    assert any("demo" in warning for warning in health["warnings"])  # SPEC §5: says so loudly

    await execute(http, "echo", {}, fresh_nonce())
    assert await ledger_size(http) == 1


@pytest.mark.anyio
async def test_policy_hash_on_health_is_stamped_on_receipts(http: httpx.AsyncClient) -> None:
    envelope = (await execute(http, "echo", {}, fresh_nonce())).json()
    body = verifier.verify_envelope(envelope, await keys_document(http))
    assert body["policy_hash"] == (await http.get("/health")).json()["policy_hash"]


@pytest.mark.anyio
async def test_ready_answers_200_when_store_and_key_are_available(http: httpx.AsyncClient) -> None:
    response = await http.get("/ready")
    assert response.status_code == 200
    assert response.json()["ready"] is True


@pytest.mark.anyio
async def test_ready_answers_503_when_the_store_is_gone(http: httpx.AsyncClient, runtime: Runtime) -> None:
    runtime.store.close()
    response = await http.get("/ready")
    assert response.status_code == 503
    assert response.json()["ready"] is False


@pytest.mark.anyio
async def test_version_lists_both_protocol_eras_and_build_metadata(http: httpx.AsyncClient) -> None:
    response = await http.get("/version")
    assert response.status_code == 200
    version = response.json()
    assert version["version"] == __version__
    assert {"2026-07-28", "2025-11-25"} <= set(version["protocol_versions"])
    assert isinstance(version["build"], dict) and version["build"]


@pytest.mark.anyio
async def test_keys_publishes_the_key_that_signs_receipts(http: httpx.AsyncClient, runtime: Runtime) -> None:
    response = await http.get("/keys")
    assert response.status_code == 200
    document = response.json()
    (entry,) = document["keys"]
    assert set(entry) == {"kid", "alg", "public_key"}
    assert entry["alg"] == "Ed25519"
    raw = base64.b64decode(entry["public_key"], validate=True)
    assert raw == runtime.server_key.public_raw
    verifier.public_keys_from_document(document)  # kid = first 16 hex of SHA-256(raw key)
    envelope = (await execute(http, "echo", {}, fresh_nonce())).json()
    assert envelope["receipt"]["signatures"][0]["keyid"] == entry["kid"]
    verifier.verify_envelope(envelope, document)


# -- POST /execute -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_seed_quickstart_body_executes_as_is(http: httpx.AsyncClient) -> None:
    response = await http.post("/execute", json=QUICKSTART)
    assert response.status_code == 200
    envelope = response.json()
    assert set(envelope) == ENVELOPE_FIELDS
    assert envelope["status"] == "executed"
    assert envelope["action"] == "echo"
    assert envelope["result"] == {"echo": {"msg": "hello world"}}
    assert envelope["error"] is None
    body = verifier.verify_envelope(envelope, await keys_document(http))
    assert body["seq"] == 0 and body["prev"] is None
    assert body["nonce"] == "unique-1"
    assert body["action_hash"] == verifier.action_hash("echo", {"msg": "hello world"}, "unique-1")


@pytest.mark.anyio
async def test_repeating_seed_quickstart_body_is_a_replay(http: httpx.AsyncClient) -> None:
    first = (await http.post("/execute", json=QUICKSTART)).json()
    response = await http.post("/execute", json=QUICKSTART)
    assert response.status_code == 200
    replay = response.json()
    assert replay["status"] == "replayed"
    assert replay["result"] == first["result"]
    assert replay["exec_id"] != first["exec_id"]
    body = verifier.verify_envelope(replay, await keys_document(http))
    assert body["original_exec_id"] == first["exec_id"]
    assert body["seq"] == 1
    assert body["prev"] == verifier.receipt_hash(first["receipt"])


@pytest.mark.anyio
async def test_replayed_nonce_does_not_run_handler_again(http: httpx.AsyncClient, counter_file: Path) -> None:
    nonce = fresh_nonce()
    first = await execute(http, "count", {"label": "once"}, nonce)
    second = await execute(http, "count", {"label": "once"}, nonce)
    assert (first.status_code, first.json()["status"]) == (200, "executed")
    assert (second.status_code, second.json()["status"]) == (200, "replayed")
    assert second.json()["result"] == {"executions": 1}
    assert executions(counter_file) == 1


@pytest.mark.anyio
async def test_same_nonce_with_other_payload_is_409_nonce_conflict(http: httpx.AsyncClient, counter_file: Path) -> None:
    nonce = fresh_nonce()
    await execute(http, "count", {"label": "a"}, nonce)
    response = await execute(http, "count", {"label": "b"}, nonce)
    assert response.status_code == 409
    envelope = response.json()
    assert envelope["status"] == "denied"
    assert envelope["error"]["code"] == "nonce_conflict"
    assert executions(counter_file) == 1
    body = verifier.verify_envelope(envelope, await keys_document(http))
    assert body["error_code"] == "nonce_conflict"


@pytest.mark.anyio
async def test_unknown_action_is_404_and_records_nothing(http: httpx.AsyncClient) -> None:
    response = await execute(http, "no_such_action", {}, fresh_nonce())
    assert response.status_code == 404
    envelope = response.json()
    assert envelope["status"] == "denied"
    assert envelope["error"]["code"] == "unknown_action"
    assert "receipt" not in envelope
    assert await ledger_size(http) == 0


@pytest.mark.anyio
async def test_string_argument_to_add_is_422_invalid_request_without_receipt(http: httpx.AsyncClient) -> None:
    nonce = fresh_nonce()
    response = await execute(http, "add", {"a": "1", "b": 2}, nonce)
    assert response.status_code == 422
    envelope = response.json()
    assert envelope["status"] == "denied"
    assert envelope["exec_id"] is None
    assert envelope["error"]["code"] == "invalid_request"
    assert "receipt" not in envelope and envelope["receipt_hash"] is None
    assert await ledger_size(http) == 0
    retry = await execute(http, "add", {"a": 1, "b": 2}, nonce)  # the nonce stays free (SPEC §10)
    assert (retry.status_code, retry.json()["result"]) == (200, {"sum": 3})


@pytest.mark.anyio
async def test_failing_handler_is_500_failed_with_receipt_and_no_exception_text(http: httpx.AsyncClient) -> None:
    response = await execute(http, "boom", {}, fresh_nonce())
    assert response.status_code == 500
    assert "secret internal detail" not in response.text
    envelope = response.json()
    assert envelope["status"] == "failed"
    assert envelope["error"]["code"] == "handler_error"
    assert envelope["result"] is None
    body = verifier.verify_envelope(envelope, await keys_document(http))
    assert body["status"] == "failed" and body["error_code"] == "handler_error"


@pytest.mark.anyio
async def test_handler_returning_non_json_is_500_invalid_result_with_receipt(http: httpx.AsyncClient) -> None:
    response = await execute(http, "not_json", {}, fresh_nonce())
    assert response.status_code == 500
    envelope = response.json()
    assert envelope["status"] == "failed"
    assert envelope["error"]["code"] == "invalid_result"
    verifier.verify_envelope(envelope, await keys_document(http))


@pytest.mark.anyio
async def test_denied_action_is_403_and_does_not_consume_the_nonce(
    make_runtime: Callable[..., Runtime], counter_file: Path
) -> None:
    nonce = fresh_nonce()
    denying = make_runtime(policy={"actions": {"count": {"approval": "deny"}}})
    async with app_client(denying) as http:
        response = await execute(http, "count", {"label": "x"}, nonce)
        assert response.status_code == 403
        envelope = response.json()
        assert envelope["status"] == "denied"
        assert envelope["error"]["code"] == "approval_denied"
        verifier.verify_envelope(envelope, await keys_document(http))
    assert executions(counter_file) == 0
    # Same database, policy now auto: the nonce was looked up, never claimed (SPEC §4).
    allowing = make_runtime()
    async with app_client(allowing) as http:
        retry = await execute(http, "count", {"label": "x"}, nonce)
        assert (retry.status_code, retry.json()["status"]) == (200, "executed")
    assert executions(counter_file) == 1


def _nested(depth: int) -> Any:
    """A payload object whose container nesting depth is exactly ``depth``."""
    value: Any = []
    for _ in range(depth - 2):
        value = [value]
    return {"x": value}


@pytest.mark.anyio
async def test_payload_nesting_31_is_echoed(http: httpx.AsyncClient) -> None:
    response = await execute(http, "echo", _nested(31), fresh_nonce())
    assert response.status_code == 200, response.text
    assert response.json()["result"] == {"echo": _nested(31)}


@pytest.mark.anyio
async def test_echo_of_a_payload_at_the_depth_limit_executes(http: httpx.AsyncClient) -> None:
    # SPEC §2 accepts nesting up to 32 and SPEC §1 says echo returns {"echo": payload}.
    response = await execute(http, "echo", _nested(32), fresh_nonce())
    assert response.status_code == 200, response.json()["error"]
    assert response.json()["result"] == {"echo": _nested(32)}


@pytest.mark.anyio
async def test_payload_of_exactly_max_payload_bytes_is_accepted(http: httpx.AsyncClient) -> None:
    payload = {"s": "a" * (65536 - len('{"s":""}'))}
    response = await execute(http, "echo", payload, fresh_nonce())
    assert response.status_code == 200, response.text


BAD_BODIES: dict[str, bytes] = {
    "duplicate-key-top": b'{"action":"echo","action":"echo","payload":{},"nonce":"bad-body-1"}',
    "duplicate-key-payload": b'{"action":"echo","payload":{"k":1,"k":2},"nonce":"bad-body-1"}',
    "nan": b'{"action":"echo","payload":{"k":NaN},"nonce":"bad-body-1"}',
    "infinity": b'{"action":"echo","payload":{"k":Infinity},"nonce":"bad-body-1"}',
    "minus-infinity": b'{"action":"echo","payload":{"k":-Infinity},"nonce":"bad-body-1"}',
    "float-overflow": b'{"action":"echo","payload":{"k":1e400},"nonce":"bad-body-1"}',
    "int-2**53": b'{"action":"echo","payload":{"k":9007199254740992},"nonce":"bad-body-1"}',
    "int--2**53": b'{"action":"echo","payload":{"k":-9007199254740992},"nonce":"bad-body-1"}',
    "lone-surrogate": b'{"action":"echo","payload":{"k":"\\ud800"},"nonce":"bad-body-1"}',
    "nesting-33": json.dumps({"action": "echo", "payload": _nested(33), "nonce": "bad-body-1"}).encode(),
    "nesting-200": json.dumps({"action": "echo", "payload": _nested(200), "nonce": "bad-body-1"}).encode(),
    "payload-over-65536": json.dumps(
        {"action": "echo", "payload": {"s": "a" * (65536 - len('{"s":""}') + 1)}, "nonce": "bad-body-1"}
    ).encode(),
    "body-over-1MiB": json.dumps({"action": "echo", "payload": {"s": "a" * (1 << 20)}, "nonce": "bad-body-1"}).encode(),
    "array": b'[{"action":"echo","payload":{},"nonce":"bad-body-1"}]',
    "string": b'"echo"',
    "null": b"null",
    "number": b"42",
    "empty": b"",
    "not-json": b"action=echo&nonce=bad-body-1",
    "truncated": b'{"action":"echo","payload":{},"nonce":"bad-body-1"',
    "invalid-utf8": b'{"action":"echo","payload":{"k":"\xff"},"nonce":"bad-body-1"}',
    "action-not-string": b'{"action":["echo"],"payload":{},"nonce":"bad-body-1"}',
    "payload-not-object": b'{"action":"echo","payload":["x"],"nonce":"bad-body-1"}',
    "nonce-inside-payload": b'{"action":"echo","payload":{"nonce":"bad-body-1"}}',
    "unknown-field": b'{"action":"echo","payload":{},"nonce":"bad-body-1","extra":1}',
    "missing-nonce": b'{"action":"echo","payload":{}}',
    "short-nonce": b'{"action":"echo","payload":{},"nonce":"short"}',
    "nonce-not-string": b'{"action":"echo","payload":{},"nonce":12345678}',
}


@pytest.mark.anyio
@pytest.mark.parametrize("body", list(BAD_BODIES.values()), ids=list(BAD_BODIES))
async def test_bad_json_body_is_422_invalid_request_and_records_nothing(http: httpx.AsyncClient, body: bytes) -> None:
    response = await http.post("/execute", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text[:300]
    envelope = response.json()
    assert envelope["status"] == "denied"
    assert envelope["exec_id"] is None
    assert envelope["error"]["code"] == "invalid_request"
    assert "receipt" not in envelope
    assert await ledger_size(http) == 0
    # ... and the nonce it carried is still free.
    retry = await execute(http, "echo", {}, "bad-body-1")
    assert retry.json()["status"] == "executed"


@pytest.mark.anyio
async def test_bad_body_never_runs_the_handler(http: httpx.AsyncClient, counter_file: Path) -> None:
    for body in (
        b'{"action":"count","payload":{"label":"a","label":"b"},"nonce":"bad-body-2"}',
        b'{"action":"count","payload":{"label":"a"},"nonce":"bad-body-2","x":NaN}',
        b'{"action":"count","payload":{"label":"a"},"nonce":"bad-body-2","run_id":9007199254740993}',
    ):
        response = await http.post("/execute", content=body)
        assert response.status_code == 422
    assert executions(counter_file) == 0
    assert await ledger_size(http) == 0


# -- POST /receipts/verify -------------------------------------------------------------------------


async def verify(http: httpx.AsyncClient, document: Any) -> dict[str, Any]:
    response = await http.post("/receipts/verify", json=document)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


@pytest.fixture
async def two_receipts(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Two result envelopes of executed calls, at seq 0 and seq 1."""
    first = (await execute(http, "echo", {"k": 1}, fresh_nonce())).json()
    second = (await execute(http, "add", {"a": 2, "b": 3}, fresh_nonce())).json()
    return [first, second]


@pytest.mark.anyio
async def test_real_receipt_is_valid_with_its_seq(http: httpx.AsyncClient, two_receipts: list[dict[str, Any]]) -> None:
    for seq, envelope in enumerate(two_receipts):
        answer = await verify(http, envelope["receipt"])
        assert answer["valid"] is True
        assert answer["seq"] == seq


@pytest.mark.anyio
async def test_receipt_with_one_payload_byte_changed_is_invalid(
    http: httpx.AsyncClient, two_receipts: list[dict[str, Any]]
) -> None:
    tampered = verifier.tamper_payload(two_receipts[0]["receipt"])
    with pytest.raises(verifier.ReceiptInvalid):
        verifier.verify_receipt(tampered, await keys_document(http))
    answer = await verify(http, tampered)
    assert answer["valid"] is False
    assert answer["reason"] == "bad_signature"


@pytest.mark.anyio
async def test_receipt_with_signature_swapped_from_another_receipt_is_invalid(
    http: httpx.AsyncClient, two_receipts: list[dict[str, Any]]
) -> None:
    first, second = (envelope["receipt"] for envelope in two_receipts)
    swapped = verifier.swap_signatures(first, second)
    with pytest.raises(verifier.ReceiptInvalid):
        verifier.verify_receipt(swapped, await keys_document(http))
    answer = await verify(http, swapped)
    assert answer["valid"] is False
    assert answer["reason"] == "bad_signature"


@pytest.mark.anyio
async def test_receipt_resigned_with_another_key_is_invalid(
    http: httpx.AsyncClient, two_receipts: list[dict[str, Any]]
) -> None:
    receipt = two_receipts[0]["receipt"]
    payload = base64.b64decode(receipt["payload"])
    attacker = Ed25519PrivateKey.generate()
    signature = base64.b64encode(attacker.sign(verifier.pae(verifier.RECEIPT_PAYLOAD_TYPE, payload))).decode()
    server_kid = receipt["signatures"][0]["keyid"]
    attacker_raw = attacker.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    attacker_kid = hashlib.sha256(attacker_raw).hexdigest()[:16]
    for keyid in (server_kid, attacker_kid):
        answer = await verify(http, {**receipt, "signatures": [{"keyid": keyid, "sig": signature}]})
        assert answer["valid"] is False, keyid


@pytest.mark.anyio
async def test_signed_receipt_absent_from_this_ledger_is_invalid(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    # Two ledgers, one server key (same state dir): the other ledger's seq 0 is genuinely signed.
    other = make_runtime(storage={"url": "sqlite:///" + str(tmp_path / "other.db")})
    async with app_client(other) as http:
        foreign = (await execute(http, "echo", {"from": "other"}, fresh_nonce())).json()
    this = make_runtime()
    async with app_client(this) as http:
        await execute(http, "echo", {"from": "this"}, fresh_nonce())
        verifier.verify_receipt(foreign["receipt"], await keys_document(http))  # the signature is fine
        answer = await verify(http, foreign["receipt"])
        assert answer["valid"] is False
        assert answer["reason"] == "not_in_ledger"


@pytest.mark.anyio
async def test_legacy_claim_is_valid_only_when_exec_id_result_and_receipt_hash_all_match(
    http: httpx.AsyncClient, two_receipts: list[dict[str, Any]]
) -> None:
    first, second = two_receipts
    claim = {"exec_id": first["exec_id"], "result": first["result"], "receipt": first["receipt_hash"]}
    answer = await verify(http, claim)
    assert answer["valid"] is True and answer["seq"] == 0

    wrong_result = {**claim, "result": {"echo": {"k": 2}}}
    wrong_hash = {**claim, "receipt": second["receipt_hash"]}
    other_exec = {**claim, "exec_id": second["exec_id"]}
    full_envelope_as_receipt = {**claim, "receipt": first["receipt"]}
    for bad in (wrong_result, wrong_hash, other_exec, full_envelope_as_receipt):
        assert (await verify(http, bad))["valid"] is False, bad


@pytest.mark.anyio
async def test_legacy_claim_for_a_replay_is_valid_with_the_returned_result(http: httpx.AsyncClient) -> None:
    nonce = fresh_nonce()
    await execute(http, "add", {"a": 1, "b": 1}, nonce)
    replay = (await execute(http, "add", {"a": 1, "b": 1}, nonce)).json()
    assert replay["status"] == "replayed"
    claim = {"exec_id": replay["exec_id"], "result": replay["result"], "receipt": replay["receipt_hash"]}
    assert (await verify(http, claim))["valid"] is True
    assert (await verify(http, {**claim, "result": {"sum": 3}}))["valid"] is False


@pytest.mark.anyio
async def test_legacy_claim_for_a_failed_call_is_never_valid(http: httpx.AsyncClient) -> None:
    failed = (await execute(http, "boom", {}, fresh_nonce())).json()
    for result in (None, {}, "secret internal detail"):
        claim = {"exec_id": failed["exec_id"], "result": result, "receipt": failed["receipt_hash"]}
        assert (await verify(http, claim))["valid"] is False


@pytest.mark.anyio
@pytest.mark.parametrize(
    "exec_id", ["0" * 32, "made-up", "", None, 0, ["x"], {"$ne": None}], ids=lambda value: repr(value)[:20]
)
async def test_made_up_exec_id_is_never_valid(
    http: httpx.AsyncClient, two_receipts: list[dict[str, Any]], exec_id: Any
) -> None:
    real = two_receipts[0]
    for result, receipt in ((real["result"], real["receipt_hash"]), (None, None), ({}, "0" * 64)):
        answer = await verify(http, {"exec_id": exec_id, "result": result, "receipt": receipt})
        assert answer["valid"] is False


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"{}",
        b'{"payloadType":"application/vnd.openexec.receipt+json"}',
        b'{"exec_id":"x","result":null}',
        b'{"k":1,"k":1}',
    ],
)
async def test_malformed_verify_request_is_never_valid(
    http: httpx.AsyncClient, two_receipts: list[dict[str, Any]], body: bytes
) -> None:
    response = await http.post("/receipts/verify", content=body)
    assert response.status_code in (200, 422)
    assert response.json()["valid"] is False


# -- a real uvicorn subprocess -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    root = tmp_path_factory.mktemp("live-http")
    with running_http_server(module_env(root), root) as server:
        yield server


def test_live_server_answers_every_get_route(live_server: HttpServer) -> None:
    with httpx.Client(base_url=live_server.base_url, timeout=10) as client:
        for path in ("/", "/health", "/ready", "/version", "/keys"):
            response = client.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-type"].startswith("application/json"), path
        assert client.get("/").json()["service"] == "openexec-mcp"


def test_live_server_keys_match_the_keys_public_command(live_server: HttpServer) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENEXEC_TEST_COUNTER", str(live_server.counter))
        env = server_env(live_server.state_dir)
    completed = run_cli("keys", "public", env=env)
    assert completed.returncode == 0, completed.stderr
    with httpx.Client(base_url=live_server.base_url, timeout=10) as client:
        assert json.loads(completed.stdout) == client.get("/keys").json()


def test_live_server_executes_quickstart_then_replays_without_rerunning(live_server: HttpServer) -> None:
    with httpx.Client(base_url=live_server.base_url, timeout=10) as client:
        keys = client.get("/keys").json()
        first = client.post("/execute", json=QUICKSTART)
        again = client.post("/execute", json=QUICKSTART)
        assert (first.status_code, first.json()["status"]) == (200, "executed")
        assert (again.status_code, again.json()["status"]) == (200, "replayed")
        assert verifier.verify_envelope(again.json(), keys)["original_exec_id"] == first.json()["exec_id"]
        assert client.post("/receipts/verify", json=again.json()["receipt"]).json()["valid"] is True

        before = executions(live_server.counter)
        count = {"action": "count", "payload": {"label": "live"}, "nonce": fresh_nonce()}
        assert client.post("/execute", json=count).json()["status"] == "executed"
        assert client.post("/execute", json=count).json()["status"] == "replayed"
        assert executions(live_server.counter) == before + 1


def test_live_server_refuses_oversized_and_duplicate_key_bodies(live_server: HttpServer) -> None:
    with httpx.Client(base_url=live_server.base_url, timeout=10) as client:
        size = client.get("/health").json()["ledger_size"]
        big = json.dumps({"action": "echo", "payload": {"s": "a" * (2 << 20)}, "nonce": fresh_nonce()})
        dup = b'{"action":"echo","payload":{"k":1,"k":2},"nonce":"dup-live-1"}'
        for body in (big.encode(), dup):
            response = client.post("/execute", content=body)
            assert response.status_code == 422
            assert response.json()["error"]["code"] == "invalid_request"
        assert client.get("/health").json()["ledger_size"] == size


def test_live_server_failed_call_is_500_without_exception_text(live_server: HttpServer) -> None:
    with httpx.Client(base_url=live_server.base_url, timeout=10) as client:
        response = client.post("/execute", json={"action": "boom", "payload": {}, "nonce": fresh_nonce()})
        assert response.status_code == 500
        assert "secret internal detail" not in response.text
        assert response.json()["status"] == "failed"
    assert "secret internal detail" in live_server.log.read_text()  # logged server-side, not returned


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"origin": "https://evil.example"}, 403),  # a web page's cross-site POST (no preflight needed)
        ({"host": "evil.example"}, 421),  # DNS rebinding: the page's own name resolves to 127.0.0.1
        ({"host": "evil.example:8000"}, 421),
        ({"origin": "null"}, 403),
    ],
)
async def test_browser_requests_from_other_sites_cannot_execute_on_loopback(
    http: httpx.AsyncClient, counter_file: Any, headers: dict[str, str], status: int
) -> None:
    response = await http.post(
        "/execute",
        content=b'{"action":"count","payload":{},"nonce":"csrf-0001"}',
        headers={"content-type": "text/plain", **headers},
    )
    assert response.status_code == status
    assert response.json()["error"]["code"] == "forbidden"
    assert not counter_file.exists()
    listing = await http.get("/approvals", headers=headers)
    assert listing.status_code == status


@pytest.mark.anyio
@pytest.mark.parametrize("origin", ["http://127.0.0.1:8000", "http://localhost:3000", None])
async def test_loopback_origins_and_plain_clients_are_served(http: httpx.AsyncClient, origin: str | None) -> None:
    headers = {"origin": origin} if origin else {}
    response = await http.post(
        "/execute",
        content=b'{"action":"echo","payload":{},"nonce":"' + (origin or "none").encode().hex()[:20].encode() + b'"}',
        headers=headers,
    )
    assert response.status_code == 200, response.text
    assert (await http.get("/health", headers={"host": "anything.example"})).status_code == 200
