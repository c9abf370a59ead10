"""``GET /approvals`` and ``GET /approvals/{request_id}`` (SPEC §5, §8; issue 9): pages of previews, detail on request.

The in-process app on a real SQLite runtime; calls of a ``signed`` action open the requests.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
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
