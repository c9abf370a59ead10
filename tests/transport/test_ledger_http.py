"""The ``/ledger/*`` routes of SPEC §8: checkpoint, inclusion proof, consistency proof.

Driven in process (``httpx.ASGITransport``) on a fresh SQLite runtime per test; every answer is
checked with the offline verifiers and the key published at ``GET /keys``.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from oe_testing.http_server import app_client
from oe_testing.nonces import fresh_nonce

from openexec_mcp.core.encoding import b64decode_strict
from openexec_mcp.core.evidence import (
    verify_checkpoint_consistency,
    verify_receipt_inclusion,
    verify_signed_checkpoint,
)
from openexec_mcp.core.receipt import parse_server_public_keys
from openexec_mcp.runtime import Runtime

pytestmark = pytest.mark.anyio


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime()


@pytest.fixture
async def http(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(runtime) as made:
        yield made


async def execute(http: httpx.AsyncClient, action: str = "echo", **payload: Any) -> dict[str, Any]:
    nonce = fresh_nonce()
    answer: dict[str, Any] = (
        await http.post("/execute", json={"action": action, "payload": payload, "nonce": nonce})
    ).json()
    return answer


async def trusted_keys(http: httpx.AsyncClient) -> dict[str, Any]:
    return parse_server_public_keys((await http.get("/keys")).text)


async def test_checkpoint_is_a_signed_note_covering_every_committed_receipt(http: httpx.AsyncClient) -> None:
    keys = await trusted_keys(http)
    first = await http.get("/ledger/checkpoint")
    assert first.status_code == 200
    assert first.headers["content-type"] == "text/plain; charset=utf-8"
    assert verify_signed_checkpoint(first.text, keys, origin="openexec-mcp").size == 0
    for index in range(3):
        await execute(http, i=index)
    second = await http.get("/ledger/checkpoint")
    assert verify_signed_checkpoint(second.text, keys, origin="openexec-mcp").size == 3
    assert (await http.get("/ledger/checkpoint")).text == second.text  # reused while nothing new is committed


async def test_every_receipt_has_a_proof_that_verifies_offline(http: httpx.AsyncClient) -> None:
    keys = await trusted_keys(http)
    envelopes = [await execute(http, i=index) for index in range(6)] + [await execute(http, "boom")]
    for envelope in envelopes:
        response = await http.get(f"/ledger/proof/{envelope['exec_id']}")
        assert response.status_code == 200
        assert response.text.startswith("c2sp.org/tlog-proof@v1\n")
        evidence = verify_receipt_inclusion(envelope["receipt"], response.text, keys)
        assert evidence.receipt_hash == envelope["receipt_hash"]
        assert evidence.checkpoint.size == 7


async def test_proof_of_an_unknown_exec_id_is_404_not_found(http: httpx.AsyncClient) -> None:
    await execute(http)
    response = await http.get("/ledger/proof/" + "0" * 32)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_consistency_proofs_link_every_kept_checkpoint_to_the_newest(http: httpx.AsyncClient) -> None:
    keys = await trusted_keys(http)
    kept = []
    for round_size in (1, 2, 5, 1):
        for index in range(round_size):
            await execute(http, i=index)
        kept.append(verify_signed_checkpoint((await http.get("/ledger/checkpoint")).text, keys))
    newest = kept[-1]
    for old in kept:
        answer = (await http.get("/ledger/consistency", params={"from": old.size, "to": newest.size})).json()
        assert (answer["from"], answer["to"], answer["checkpoint"]) == (old.size, newest.size, None)
        verify_checkpoint_consistency(old, newest, [b64decode_strict(value) for value in answer["proof"]])


async def test_consistency_without_to_answers_up_to_a_fresh_checkpoint(http: httpx.AsyncClient) -> None:
    keys = await trusted_keys(http)
    await execute(http)
    old = verify_signed_checkpoint((await http.get("/ledger/checkpoint")).text, keys)
    for index in range(4):
        await execute(http, i=index)
    answer = (await http.get("/ledger/consistency", params={"from": old.size})).json()
    new = verify_signed_checkpoint(answer["checkpoint"], keys)
    assert (answer["to"], new.size) == (5, 5)
    verify_checkpoint_consistency(old, new, [b64decode_strict(value) for value in answer["proof"]])


@pytest.mark.parametrize(
    "query",
    ["", "?from=abc", "?from=-1", "?from=1.5", "?from=4&to=2", "?from=1&to=99", "?from=99999999999999999999"],
)
async def test_consistency_with_impossible_sizes_is_422_invalid_request(http: httpx.AsyncClient, query: str) -> None:
    for index in range(4):
        await execute(http, i=index)
    response = await http.get("/ledger/consistency" + query)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"


def token_settings(*tokens: tuple[str, str]) -> dict[str, Any]:
    return {
        "auth": {
            "tokens": [
                {
                    "sha256": hashlib.sha256(token.encode()).hexdigest(),
                    "tenant_id": tenant,
                    "scopes": ["execute", "read"],
                }
                for token, tenant in tokens
            ]
        }
    }


async def test_with_tokens_the_ledger_routes_need_read_and_proofs_are_per_tenant(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime(**token_settings(("alice", "tenant-a"), ("bob", "tenant-b")))
    async with app_client(runtime) as http:
        assert (await http.get("/ledger/checkpoint")).status_code == 401
        alice = {"authorization": "Bearer alice"}
        body = {"action": "echo", "payload": {}, "nonce": fresh_nonce()}
        envelope = (await http.post("/execute", json=body, headers=alice)).json()
        path = f"/ledger/proof/{envelope['exec_id']}"
        assert (await http.get(path, headers=alice)).status_code == 200
        assert (await http.get(path, headers={"authorization": "Bearer bob"})).status_code == 404
        assert (await http.get("/ledger/checkpoint", headers={"authorization": "Bearer bob"})).status_code == 200
