"""``POST /grants``, revocation, and reject decisions over HTTP (SPEC §13; issue 14).

Real Starlette app of the server (``oe_testing.http_server.app_client``) on a real SQLite file.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from oe_testing.actions import executions
from oe_testing.approvals import approvals_config, mint, mint_grant

from openexec_mcp.runtime import Runtime

pytestmark = pytest.mark.anyio


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime(mode="clawshield", approvals=approvals_config())


@pytest.fixture
async def http(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    from oe_testing.http_server import app_client

    async with app_client(runtime) as client:
        yield client


async def execute(http: httpx.AsyncClient, label: str, nonce: str | None = None, **extra: Any) -> httpx.Response:
    body = {"action": "count", "payload": {"label": label}, "nonce": nonce or uuid.uuid4().hex, **extra}
    return await http.post("/execute", json=body)


async def test_posted_grant_runs_calls_without_prompts_until_revoked(
    http: httpx.AsyncClient, counter_file: Path
) -> None:
    grant = mint_grant(["count"], max_uses=10)
    posted = await http.post("/grants", json=grant)
    assert (posted.status_code, posted.json()) == (201, {"grant_id": grant["grant_id"], "stored": True})
    assert (await http.post("/grants", json=grant)).status_code == 200  # idempotent
    for label in ("a", "b"):
        answer = await execute(http, label)
        assert (answer.status_code, answer.json()["status"]) == (200, "executed")
    listed = (await http.get("/grants")).json()["grants"]
    assert [(item["grant_id"], item["uses"]) for item in listed] == [(grant["grant_id"], 2)]
    revoked = await http.post(f"/grants/{grant['grant_id']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    refused = await execute(http, "c")
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "approval_grant_revoked")
    assert executions(counter_file) == 2


async def test_bad_grants_are_refused_with_their_code(http: httpx.AsyncClient) -> None:
    too_long = mint_grant(["count"], ttl_seconds=9 * 3600)
    answer = await http.post("/grants", json=too_long)
    assert (answer.status_code, answer.json()["error"]["code"]) == (403, "approval_ttl_too_long")
    malformed = await http.post("/grants", json={**mint_grant(["count"]), "actions": []})
    assert (malformed.status_code, malformed.json()["error"]["code"]) == (422, "approval_malformed")
    not_json = await http.post("/grants", content=b"{")
    assert not_json.status_code == 422
    assert (await http.post("/grants/gr-unknown/revoke")).status_code == 404


async def test_reject_posted_to_the_inbox_refuses_the_retry_and_in_the_execute_body_too(
    http: httpx.AsyncClient, counter_file: Path
) -> None:
    nonce = uuid.uuid4().hex
    proposed = await execute(http, "a", nonce)
    action_hash = proposed.json()["approval_request"]["action_hash"]
    reject = mint(action_hash, decision="reject", reason="too risky")
    assert (await http.post("/approvals", json=reject)).status_code == 201
    retry = await execute(http, "a", nonce)
    assert (retry.status_code, retry.json()["error"]["code"]) == (403, "approval_rejected")
    nonce2 = uuid.uuid4().hex
    action_hash2 = (await execute(http, "b", nonce2)).json()["approval_request"]["action_hash"]
    inline = await execute(http, "b", nonce2, approval_artifact=mint(action_hash2, decision="reject", reason="no"))
    assert (inline.status_code, inline.json()["error"]["code"]) == (403, "approval_rejected")
    assert executions(counter_file) == 0
