"""``GET /approvals`` and ``GET /approvals/{request_id}`` (SPEC §5, §8; issue 9): pages of previews, detail on request.

The in-process app on a real SQLite runtime; calls of a ``signed`` action open the requests.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from oe_testing.actions import executions
from oe_testing.approvals import approvals_config, mint
from oe_testing.http_server import app_client

from openexec_mcp.runtime import Runtime

pytestmark = pytest.mark.anyio

SIGNED = {"actions": {"count": {"approval": "signed"}}}


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime(policy=SIGNED)


@pytest.fixture
async def http(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(runtime) as client:
        yield client


async def propose(http: httpx.AsyncClient, label: str) -> dict[str, Any]:
    answer = await http.post(
        "/execute", json={"action": "count", "payload": {"label": label}, "nonce": uuid.uuid4().hex}
    )
    assert answer.json()["error"]["code"] == "approval_required"
    request: dict[str, Any] = answer.json()["approval_request"]
    return request


async def test_get_approvals_after_many_large_calls_answers_small_pages_of_visibly_cut_previews(
    http: httpx.AsyncClient,
) -> None:
    labels = [f"{index:02d}" + "x" * 20_000 for index in range(20)]
    proposed = [await propose(http, label) for label in labels]

    first = await http.get("/approvals", params={"limit": "8"})
    assert first.status_code == 200
    assert len(first.content) < 8 * 1024  # not 20 x 20 KB
    page = first.json()
    assert len(page["approval_requests"]) == 8 and page["next_cursor"]
    for item in page["approval_requests"]:
        assert item["truncated"] is True and "payload" not in item["action_request"]
        assert item["action_request"]["payload_preview"].endswith("more characters]")
        assert item["action_request"]["action"] == "count"

    seen = [item["request_id"] for item in page["approval_requests"]]
    cursor = page["next_cursor"]
    while cursor:
        page = (await http.get("/approvals", params={"limit": "8", "cursor": cursor})).json()
        seen += [item["request_id"] for item in page["approval_requests"]]
        cursor = page["next_cursor"]
    # Every request once, oldest first (calls in one millisecond are ordered by request_id).
    assert sorted(seen) == sorted(request["request_id"] for request in proposed)

    detail = await http.get(f"/approvals/{proposed[3]['request_id']}")
    assert detail.status_code == 200
    assert detail.json()["action_request"]["payload"] == {"label": labels[3]}
    assert detail.json()["action_hash"] == proposed[3]["action_hash"]


async def test_small_payloads_are_listed_whole(http: httpx.AsyncClient) -> None:
    await propose(http, "small")
    (item,) = (await http.get("/approvals")).json()["approval_requests"]
    assert item["truncated"] is False and item["action_request"]["payload"] == {"label": "small"}


async def test_a_tenant_flooding_the_inbox_keeps_only_its_newest_pending_requests(
    make_runtime: Callable[..., Runtime],
) -> None:
    capped = make_runtime(policy=SIGNED, approvals={"max_pending_per_tenant": 25})
    async with app_client(capped) as http:
        proposed = [await propose(http, f"flood-{index}") for index in range(30)]
        listed = (await http.get("/approvals", params={"limit": "100"})).json()
    kept = {item["request_id"] for item in listed["approval_requests"]}
    assert len(kept) == 25 and proposed[-1]["request_id"] in kept
    assert listed["next_cursor"] is None


@pytest.mark.parametrize("query", [{"limit": "0"}, {"limit": "101"}, {"limit": "x"}, {"cursor": "not-a-cursor"}])
async def test_a_bad_page_query_is_refused(http: httpx.AsyncClient, query: dict[str, str]) -> None:
    answer = await http.get("/approvals", params=query)
    assert (answer.status_code, answer.json()["error"]["code"]) == (422, "invalid_request")


async def test_an_unknown_request_id_is_not_found(http: httpx.AsyncClient) -> None:
    answer = await http.get("/approvals/" + "0" * 32)
    assert (answer.status_code, answer.json()["error"]["code"]) == (404, "not_found")


async def test_another_tenants_sixteen_inbox_artifacts_cannot_hide_a_tenants_approval(
    make_runtime: Callable[..., Runtime], counter_file: Path
) -> None:
    """Issue 9: tenant B floods A's action_hash with its own valid artifacts; A's approval still works."""
    tokens = {"alice-token-0123456789": "tenant-a", "bob-token-0123456789": "tenant-b"}
    runtime = make_runtime(
        policy=SIGNED,
        approvals=approvals_config(),
        auth={
            "tokens": [
                {
                    "sha256": hashlib.sha256(token.encode()).hexdigest(),
                    "tenant_id": tenant,
                    "scopes": ["execute", "approve", "read"],
                }
                for token, tenant in tokens.items()
            ]
        },
    )
    alice, bob = ({"authorization": f"Bearer {token}"} for token in tokens)
    call = {"action": "count", "payload": {"label": "pay"}, "nonce": uuid.uuid4().hex}
    async with app_client(runtime) as http:
        proposed = await http.post("/execute", json=call, headers=alice)
        action_hash = proposed.json()["approval_request"]["action_hash"]
        mine = await http.post("/approvals", json=mint(action_hash, tenant_id="tenant-a"), headers=alice)
        assert mine.status_code == 201
        for _ in range(16):
            theirs = await http.post("/approvals", json=mint(action_hash, tenant_id="tenant-b"), headers=bob)
            assert theirs.status_code == 201
        done = await http.post("/execute", json=call, headers=alice)
    assert (done.status_code, done.json()["status"]) == (200, "executed")
    assert executions(counter_file) == 1
