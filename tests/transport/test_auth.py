"""Bearer-token auth of the HTTP surface and tenant isolation (SPEC §8; issue 3).

One real ``serve --transport http`` process (module-scoped) with ``[[auth.tokens]]`` stored as
SHA-256 hashes: every route but ``/health`` and ``/ready`` needs a token with the route's scope,
on the plain routes, on streamable HTTP ``/mcp`` (both protocol eras, real SDK client) and on
legacy SSE. The token's tenant scopes nonces, approvals and the inbox.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from conftest import module_env, server_env
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from oe_testing import verifier
from oe_testing.actions import executions
from oe_testing.approvals import GOV_KID, GOV_PUBLIC_B64, ISSUER, mint, write_private_key
from oe_testing.http_server import HttpServer, free_port, running_http_server
from oe_testing.nonces import fresh_nonce
from oe_testing.processes import run_cli
from oe_testing.receipts import body_of, envelope_of

TOKENS: dict[str, tuple[str, list[str]]] = {
    "alice-token": ("tenant-a", ["execute", "approve", "read"]),
    "bob-token": ("tenant-b", ["execute", "approve", "read"]),
    "reader-token": ("tenant-a", ["read"]),
    "runner-token": ("tenant-a", ["execute"]),
    "carol-token": ("tenant-b", ["execute", "read"]),
}
ALICE, BOB, READER, RUNNER, CAROL = TOKENS
WRONG = "not-a-configured-token"
ERAS = ["legacy", "auto"]


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def tokens_toml() -> str:
    return "".join(
        f'[[auth.tokens]]\nsha256 = "{sha256_hex(token)}"\ntenant_id = "{tenant}"\nscopes = {json.dumps(scopes)}\n'
        for token, (tenant, scopes) in TOKENS.items()
    )


CONFIG = (
    '[policy.actions.count]\napproval = "signed"\n'
    f'[[approvals.keys]]\nkid = "{GOV_KID}"\nalg = "ed25519"\npublic_key = "{GOV_PUBLIC_B64}"\nissuers = ["{ISSUER}"]\n'
    + tokens_toml()
)


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token is not None else {}


def action_hash(action: str, payload: dict[str, Any], nonce: str) -> str:
    return verifier.action_hash(action, payload, nonce)


@asynccontextmanager
async def mcp_client(server: HttpServer, token: str | None, era: str) -> AsyncIterator[Client]:
    """A real SDK client on ``/mcp`` sending ``Authorization: Bearer <token>``."""
    async with (
        httpx2.AsyncClient(headers=bearer(token), timeout=30.0) as http,
        Client(streamable_http_client(server.mcp_url, http_client=http), mode=era) as client,
    ):
        yield client


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    root = tmp_path_factory.mktemp("auth-http")
    config = root / "openexec.toml"
    config.write_text(CONFIG)
    with running_http_server(module_env(root, OPENEXEC_CONFIG=str(config)), root) as running:
        yield running


@pytest.fixture
async def http(server: HttpServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30.0) as client:
        yield client


@pytest.fixture(scope="module")
def keys_document(server: HttpServer) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(server.base_url + "/keys", headers=bearer(READER)).json()
    return document


async def execute(
    http: httpx.AsyncClient, token: str | None, payload: dict[str, Any], nonce: str, action: str = "echo", **extra: Any
) -> httpx.Response:
    body = {"action": action, "payload": payload, "nonce": nonce, **extra}
    return await http.post("/execute", json=body, headers=bearer(token))


# -- plain routes ------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/health", "/ready"])
async def test_health_and_ready_stay_open_without_a_token(http: httpx.AsyncClient, path: str) -> None:
    assert (await http.get(path)).status_code == 200
    assert (await http.get(path, headers=bearer(WRONG))).status_code == 200


GUARDED = [
    ("GET", "/"),
    ("GET", "/version"),
    ("GET", "/keys"),
    ("POST", "/execute"),
    ("POST", "/receipts/verify"),
    ("GET", "/approvals"),
    ("POST", "/approvals"),
]
BAD_CREDENTIALS = {
    "missing": {},
    "wrong": bearer(WRONG),
    "empty": {"Authorization": "Bearer"},
    "basic-scheme": {"Authorization": "Basic " + base64.b64encode(f"x:{ALICE}".encode()).decode()},
    "token-hash-instead-of-token": bearer(sha256_hex(ALICE)),
}


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "path"), GUARDED, ids=[f"{m} {p}" for m, p in GUARDED])
@pytest.mark.parametrize("credentials", list(BAD_CREDENTIALS), ids=list(BAD_CREDENTIALS))
async def test_guarded_route_without_a_valid_token_is_401(
    http: httpx.AsyncClient, server: HttpServer, method: str, path: str, credentials: str
) -> None:
    before = executions(server.counter)
    body = {"action": "count", "payload": {}, "nonce": fresh_nonce()} if path == "/execute" else {}
    response = await http.request(
        method, path, json=body if method == "POST" else None, headers=BAD_CREDENTIALS[credentials]
    )
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert executions(server.counter) == before


@pytest.mark.anyio
async def test_right_token_is_accepted_on_every_read_route(http: httpx.AsyncClient) -> None:
    for path in ("/", "/version", "/keys", "/approvals"):
        assert (await http.get(path, headers=bearer(READER))).status_code == 200, path


@pytest.mark.anyio
async def test_execute_with_the_right_token_runs_as_the_tokens_tenant(
    http: httpx.AsyncClient, keys_document: dict[str, Any]
) -> None:
    response = await execute(http, ALICE, {"msg": "hi"}, fresh_nonce())
    assert response.status_code == 200
    body = verifier.verify_envelope(response.json(), keys_document)
    assert body["tenant_id"] == "tenant-a"


@pytest.mark.anyio
@pytest.mark.parametrize("token", [READER], ids=["read-only"])
async def test_token_without_execute_scope_gets_403_on_execute_and_runs_nothing(
    http: httpx.AsyncClient, server: HttpServer, token: str
) -> None:
    before = executions(server.counter)
    nonce = fresh_nonce()
    response = await execute(http, token, {"label": "x"}, nonce, action="count")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert 'scope="execute"' in response.headers["www-authenticate"]
    assert executions(server.counter) == before
    # The refused request recorded nothing: the nonce is still free for a permitted caller.
    allowed = await execute(http, RUNNER, {"msg": "x"}, nonce)
    assert (allowed.status_code, allowed.json()["status"]) == (200, "executed")


@pytest.mark.anyio
async def test_get_approvals_needs_the_read_scope(http: httpx.AsyncClient) -> None:
    response = await http.get("/approvals", headers=bearer(RUNNER))
    assert response.status_code == 403
    assert 'scope="read"' in response.headers["www-authenticate"]


@pytest.mark.anyio
async def test_post_approvals_needs_the_approve_scope(http: httpx.AsyncClient) -> None:
    nonce = fresh_nonce()
    artifact = mint(action_hash("count", {}, nonce), tenant_id="tenant-b")
    refused = await http.post("/approvals", json=artifact, headers=bearer(CAROL))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    accepted = await http.post("/approvals", json=artifact, headers=bearer(BOB))
    assert accepted.status_code == 201
    assert accepted.json() == {
        "approval_id": artifact["approval_id"],
        "action_hash": artifact["action_hash"],
        "stored": True,
    }
    again = await http.post("/approvals", json=artifact, headers=bearer(BOB))
    assert (again.status_code, again.json()["stored"]) == (200, False)


@pytest.mark.anyio
async def test_artifact_for_another_tenant_is_refused_at_submission(http: httpx.AsyncClient) -> None:
    artifact = mint(action_hash("count", {}, fresh_nonce()), tenant_id="tenant-a")
    response = await http.post("/approvals", json=artifact, headers=bearer(BOB))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "approval_tenant_mismatch"
    assert "tenant-b" not in response.text


# -- tenant isolation ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_one_nonce_in_two_tenants_executes_in_both(
    http: httpx.AsyncClient, server: HttpServer, keys_document: dict[str, Any]
) -> None:
    nonce = fresh_nonce()
    before = executions(server.counter)
    first = await execute(http, ALICE, {"msg": "from a"}, nonce)
    # Tenant B, same nonce, other payload: no nonce_conflict, no replay of A's result.
    second = await execute(http, BOB, {"msg": "from b"}, nonce)
    assert (first.status_code, second.status_code) == (200, 200)
    assert (first.json()["status"], second.json()["status"]) == ("executed", "executed")
    assert first.json()["result"] == {"echo": {"msg": "from a"}}
    assert second.json()["result"] == {"echo": {"msg": "from b"}}
    assert verifier.verify_envelope(first.json(), keys_document)["tenant_id"] == "tenant-a"
    assert verifier.verify_envelope(second.json(), keys_document)["tenant_id"] == "tenant-b"
    # Each tenant's replay returns its own result.
    replay_b = await execute(http, BOB, {"msg": "from b"}, nonce)
    assert (replay_b.json()["status"], replay_b.json()["result"]) == ("replayed", {"echo": {"msg": "from b"}})
    assert body_of(replay_b.json())["original_exec_id"] == second.json()["exec_id"]
    assert executions(server.counter) == before  # echo does not count


@pytest.mark.anyio
async def test_tenant_a_cannot_poison_tenant_bs_nonce_over_mcp(
    server: HttpServer, keys_document: dict[str, Any]
) -> None:
    nonce = fresh_nonce()
    envelopes = []
    for token, text in ((ALICE, "a"), (BOB, "b")):
        async with mcp_client(server, token, "auto") as mcp:
            envelopes.append(envelope_of(await mcp.call_tool("echo", {"msg": text, "nonce": nonce})))
    assert [e["status"] for e in envelopes] == ["executed", "executed"]
    tenants = [verifier.verify_envelope(e, keys_document)["tenant_id"] for e in envelopes]
    assert tenants == ["tenant-a", "tenant-b"]


@pytest.mark.anyio
async def test_approval_flow_is_scoped_to_the_tenant(http: httpx.AsyncClient, server: HttpServer) -> None:
    nonce = fresh_nonce()
    before = executions(server.counter)
    proposed = await execute(http, ALICE, {"label": "a"}, nonce, action="count")
    assert (proposed.status_code, proposed.json()["error"]["code"]) == (403, "approval_required")
    request = proposed.json()["approval_request"]
    submitted = await http.post(
        "/approvals", json=mint(request["action_hash"], tenant_id="tenant-a"), headers=bearer(ALICE)
    )
    assert submitted.status_code == 201
    done = await execute(http, ALICE, {"label": "a"}, nonce, action="count")
    assert (done.status_code, done.json()["status"]) == (200, "executed")
    assert body_of(done.json())["tenant_id"] == "tenant-a"
    # Tenant B sends the identical call: A's approval and A's result are not B's.
    other = await execute(http, BOB, {"label": "a"}, nonce, action="count")
    assert other.status_code == 403
    assert other.json()["status"] == "denied"
    assert other.json()["result"] is None
    assert executions(server.counter) == before + 1


@pytest.mark.anyio
async def test_tenant_as_inbox_approval_neither_leaks_to_nor_blocks_tenant_b(http: httpx.AsyncClient) -> None:
    nonce = fresh_nonce()
    proposed = await execute(http, ALICE, {"label": "same"}, nonce, action="count")
    request = proposed.json()["approval_request"]
    submitted = await http.post(
        "/approvals", json=mint(request["action_hash"], tenant_id="tenant-a"), headers=bearer(ALICE)
    )
    assert submitted.status_code == 201
    other = await execute(http, BOB, {"label": "same"}, nonce, action="count")
    assert "tenant-a" not in other.text
    assert other.json()["error"]["code"] == "approval_required"
    assert other.json()["approval_request"] is not None


@pytest.mark.anyio
async def test_artifact_in_the_execute_body_counts_only_for_the_tokens_tenant(
    http: httpx.AsyncClient, server: HttpServer
) -> None:
    nonce = fresh_nonce()
    before = executions(server.counter)
    artifact = mint(action_hash("count", {"label": "body"}, nonce), tenant_id="tenant-a")
    stolen = await execute(http, BOB, {"label": "body"}, nonce, action="count", approval_artifact=artifact)
    assert (stolen.status_code, stolen.json()["error"]["code"]) == (403, "approval_tenant_mismatch")
    assert "tenant-b" not in stolen.text
    own = await execute(http, ALICE, {"label": "body"}, nonce, action="count", approval_artifact=artifact)
    assert (own.status_code, own.json()["status"]) == (200, "executed")
    assert body_of(own.json())["approval"]["approval_id"] == artifact["approval_id"]
    assert executions(server.counter) == before + 1


@pytest.mark.anyio
async def test_get_approvals_lists_only_the_callers_tenants_requests(http: httpx.AsyncClient) -> None:
    nonce_a, nonce_b = fresh_nonce(), fresh_nonce()
    for token, nonce in ((ALICE, nonce_a), (BOB, nonce_b)):
        response = await execute(http, token, {"label": "pending"}, nonce, action="count")
        assert response.json()["error"]["code"] == "approval_required"
    listed = {}
    for token in (ALICE, READER, BOB):
        answer = await http.get("/approvals", headers=bearer(token))
        assert answer.status_code == 200
        listed[token] = answer.json()["approval_requests"]
    for token, tenant, mine, theirs in (
        (ALICE, "tenant-a", nonce_a, nonce_b),
        (READER, "tenant-a", nonce_a, nonce_b),
        (BOB, "tenant-b", nonce_b, nonce_a),
    ):
        assert {item["tenant_id"] for item in listed[token]} == {tenant}
        nonces = {item["action_request"]["nonce"] for item in listed[token]}
        assert mine in nonces and theirs not in nonces


@pytest.mark.anyio
async def test_governance_cli_lists_and_approves_with_a_bearer_token(
    http: httpx.AsyncClient, server: HttpServer, tmp_path: Path
) -> None:
    nonce = fresh_nonce()
    proposed = await execute(http, ALICE, {"label": "via-cli"}, nonce, action="count")
    request_id = proposed.json()["approval_request"]["request_id"]
    key = write_private_key(tmp_path / "governance.key")
    env = server_env(tmp_path / "unused-state")

    def cli(*args: str, token: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "--server", server.base_url, env={**env, "OPENEXEC_TOKEN": token})

    # Bob's approver sees only tenant-b's inbox, so cannot approve Alice's call by its id.
    refused = cli("approve", request_id, "--key", str(key), "--kid", GOV_KID, "--yes", token=BOB)
    assert refused.returncode == 2 and "no pending approval request" in refused.stderr
    approved = cli("approve", request_id, "--key", str(key), "--kid", GOV_KID, "--yes", token=ALICE)
    assert approved.returncode == 0, approved.stderr
    assert "via-cli" in approved.stderr and "tenant-a" in approved.stderr
    done = await execute(http, ALICE, {"label": "via-cli"}, nonce, action="count")
    assert (done.status_code, done.json()["status"]) == (200, "executed")
    assert body_of(done.json())["approval"]["kid"] == GOV_KID


# -- /mcp and /sse -----------------------------------------------------------------------------------


MCP_PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("token", "status"), [(None, 401), (WRONG, 401), (READER, 403)], ids=["missing", "wrong", "no-execute-scope"]
)
async def test_mcp_endpoint_refuses_bad_tokens_at_the_http_layer(
    http: httpx.AsyncClient, token: str | None, status: int
) -> None:
    response = await http.post("/mcp", json=MCP_PING, headers={**MCP_HEADERS, **bearer(token)})
    assert response.status_code == status
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("token", [None, WRONG, READER], ids=["missing", "wrong", "no-execute-scope"])
async def test_sdk_client_on_mcp_without_a_valid_token_cannot_call_tools(
    server: HttpServer, era: str, token: str | None
) -> None:
    before = executions(server.counter)
    with pytest.raises(Exception) as raised:
        async with mcp_client(server, token, era) as mcp:
            await mcp.call_tool("echo", {"msg": "x", "nonce": fresh_nonce()})
    # The SDK turns the HTTP 401/403 of the first request into an error response.
    assert any(isinstance(leaf, MCPError) for leaf in leaves(raised.value)), raised.value
    assert executions(server.counter) == before


@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize(
    ("token", "tenant"),
    [(ALICE, "tenant-a"), (RUNNER, "tenant-a"), (BOB, "tenant-b")],
    ids=["alice", "execute-only", "bob"],
)
async def test_sdk_client_on_mcp_with_the_right_token_runs_as_its_tenant(
    server: HttpServer, keys_document: dict[str, Any], era: str, token: str, tenant: str
) -> None:
    async with mcp_client(server, token, era) as mcp:
        assert "count" in {tool.name for tool in (await mcp.list_tools()).tools}
        envelope = envelope_of(await mcp.call_tool("echo", {"msg": "x", "nonce": fresh_nonce()}))
    assert envelope["status"] == "executed"
    assert verifier.verify_envelope(envelope, keys_document)["tenant_id"] == tenant


@pytest.mark.anyio
@pytest.mark.parametrize("token", [None, WRONG, READER], ids=["missing", "wrong", "no-execute-scope"])
async def test_sse_without_a_valid_token_cannot_connect(server: HttpServer, token: str | None) -> None:
    with pytest.raises(Exception) as raised:
        async with Client(sse_client(server.sse_url, headers=bearer(token)), mode="legacy") as mcp:
            await mcp.call_tool("echo", {"msg": "x", "nonce": fresh_nonce()})
    statuses = {leaf.response.status_code for leaf in leaves(raised.value) if isinstance(leaf, httpx2.HTTPStatusError)}
    assert statuses == {403 if token == READER else 401}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("token", "status"), [(None, 401), (WRONG, 401), (READER, 403)], ids=["missing", "wrong", "no-execute-scope"]
)
async def test_sse_routes_answer_401_or_403_to_bad_tokens(
    http: httpx.AsyncClient, token: str | None, status: int
) -> None:
    async with http.stream("GET", "/sse", headers=bearer(token)) as response:
        assert response.status_code == status
    posted = await http.post(f"/messages/?session_id={uuid.uuid4().hex}", json=MCP_PING, headers=bearer(token))
    assert posted.status_code == status


@pytest.mark.anyio
@pytest.mark.parametrize(("token", "tenant"), [(ALICE, "tenant-a"), (BOB, "tenant-b")], ids=["alice", "bob"])
async def test_sse_with_the_right_token_runs_as_its_tenant(
    server: HttpServer, keys_document: dict[str, Any], token: str, tenant: str
) -> None:
    async with Client(sse_client(server.sse_url, headers=bearer(token)), mode="legacy") as mcp:
        envelope = envelope_of(await mcp.call_tool("echo", {"msg": "x", "nonce": fresh_nonce()}))
    assert envelope["status"] == "executed"
    assert verifier.verify_envelope(envelope, keys_document)["tenant_id"] == tenant


@pytest.mark.anyio
async def test_mcp_call_needing_approval_is_scoped_to_the_tokens_tenant(server: HttpServer) -> None:
    nonce = fresh_nonce()
    async with mcp_client(server, BOB, "auto") as mcp:
        envelope = envelope_of(await mcp.call_tool("count", {"nonce": nonce}))
    assert envelope["error"]["code"] == "approval_required"
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        bobs = (await http.get("/approvals", headers=bearer(CAROL))).json()["approval_requests"]
        alices = (await http.get("/approvals", headers=bearer(ALICE))).json()["approval_requests"]
    assert nonce in {item["action_request"]["nonce"] for item in bobs}
    assert nonce not in {item["action_request"]["nonce"] for item in alices}


def test_demo_mode_server_warns_on_stderr_and_in_health(server: HttpServer) -> None:
    assert "DEMO MODE" in server.log.read_text()
    health = httpx.get(server.base_url + "/health", headers=bearer(READER)).json()
    assert health["mode"] == "demo" and health["warnings"]


@pytest.mark.anyio
@pytest.mark.parametrize("credentials", [None, WRONG, RUNNER], ids=["anonymous", "wrong-token", "no-read-scope"])
async def test_health_without_a_read_token_is_liveness_only_and_hides_the_ledger_size(
    http: httpx.AsyncClient, credentials: str | None
) -> None:
    await execute(http, ALICE, {"msg": "x"}, fresh_nonce())
    answer = await http.get("/health", headers=bearer(credentials))
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}
    detail = (await http.get("/health", headers=bearer(READER))).json()
    assert detail["status"] == "ok" and detail["ledger_size"] >= 1 and "policy_hash" in detail


@pytest.mark.anyio
async def test_legacy_verify_of_another_tenants_exec_id_answers_like_an_unknown_one(http: httpx.AsyncClient) -> None:
    done = (await execute(http, ALICE, {"msg": "mine"}, fresh_nonce())).json()
    claim = {"exec_id": done["exec_id"], "result": done["result"], "receipt": done["receipt_hash"]}
    own = (await http.post("/receipts/verify", json=claim, headers=bearer(ALICE))).json()
    assert own["valid"] is True
    unknown = {"exec_id": "f" * 32, "result": done["result"], "receipt": done["receipt_hash"]}
    expected = (await http.post("/receipts/verify", json=unknown, headers=bearer(CAROL))).json()
    for probe in (claim, {**claim, "receipt": "0" * 64}, {**claim, "result": {"other": 1}}):
        answer = await http.post("/receipts/verify", json=probe, headers=bearer(CAROL))
        assert answer.status_code == 200 and answer.json() == expected
    assert expected == {"valid": False, "reason": "unknown_exec_id", "seq": None}


# -- bind address ----------------------------------------------------------------------------------


def test_public_bind_without_tokens_refuses_to_start(tmp_path: Path) -> None:
    env = server_env(tmp_path / "state")
    outcome = run_cli("serve", "--transport", "http", "--host", "0.0.0.0", "--port", str(free_port()), env=env)
    assert outcome.returncode == 2
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1 and "0.0.0.0" in lines[0] and "tokens" in lines[0]
    assert "Traceback" not in outcome.stderr


def test_public_bind_with_tokens_starts_and_requires_them(tmp_path: Path) -> None:
    config = tmp_path / "openexec.toml"
    config.write_text(tokens_toml())
    env = server_env(tmp_path / "state", OPENEXEC_CONFIG=str(config))
    # running_http_server passes --host 127.0.0.1 first; the later --host wins (argparse).
    with (
        running_http_server(env, tmp_path, "--host", "0.0.0.0") as running,
        httpx.Client(base_url=running.base_url, timeout=30.0) as http,
    ):
        assert http.get("/health").status_code == 200
        body = {"action": "echo", "payload": {"msg": "hi"}, "nonce": fresh_nonce()}
        assert http.post("/execute", json=body).status_code == 401
        answer = http.post("/execute", json=body, headers=bearer(ALICE))
        assert (answer.status_code, answer.json()["status"]) == (200, "executed")
