"""Talking to the watched execution servers (SPEC §8, §13): their pending requests, tools and decisions.

Synchronous httpx with a 10 s timeout, one client a call, the server's bearer token when it has
one; the app runs these on worker threads. What a server answers is untrusted: requests are
parsed by :func:`~openexec_mcp.governance.records.pending_from`, and the console recomputes every
action_hash before it signs.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx

from openexec_mcp.governance.config import WatchedServer
from openexec_mcp.governance.records import DecisionError, PendingRequest, pending_from

__all__ = ["fetch_request", "list_pending", "revoke_grant", "submit", "tool_info"]

logger = logging.getLogger("openexec_mcp.governance")

_TIMEOUT = httpx.Timeout(10.0)
_MAX_PAGES = 100
"""Pages of 100 read from one listing: at most 10 000 requests a server."""


def _client(server: WatchedServer) -> httpx.Client:
    headers = {"Authorization": f"Bearer {server.token}"} if server.token else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=_TIMEOUT)


def list_pending(server: WatchedServer) -> list[PendingRequest]:
    """Return the server's pending requests (``GET /approvals``, page after page), previews marked incomplete.

    Raises:
        httpx.HTTPError: The server cannot be reached or answered an error status.
        ValueError, KeyError: The answer is not a listing.
    """
    items: list[PendingRequest] = []
    params = {"limit": "100"}
    with _client(server) as client:
        for _ in range(_MAX_PAGES):
            answer = client.get("/approvals", params=params)
            answer.raise_for_status()
            page = answer.json()
            for item in page["approval_requests"]:
                items.append(pending_from(f"s{server.index}", item, complete=not item.get("truncated")))
            if not page.get("next_cursor"):
                break
            params["cursor"] = str(page["next_cursor"])
    return items


def fetch_request(server: WatchedServer, source: str, request_id: str) -> PendingRequest | None:
    """Return one pending request with its WHOLE action request (``GET /approvals/{id}``), ``None`` on 404.

    Raises:
        httpx.HTTPError: The server cannot be reached or answered another error status.
        ValueError, KeyError: The answer is not a pending request.
    """
    with _client(server) as client:
        answer = client.get(f"/approvals/{request_id}")
    if answer.status_code == 404:
        return None
    answer.raise_for_status()
    return pending_from(source, answer.json(), complete=True)


def submit(server: WatchedServer, route: str, artifact: dict[str, Any]) -> str:
    """Submit a signed artifact (``POST /approvals`` or ``POST /grants``); return what happened, for the history.

    Raises:
        DecisionError: The server cannot be reached, or refused the artifact (its error code shown).
    """
    try:
        with _client(server) as client:
            answer = client.post(route, json=artifact)
    except httpx.HTTPError as exc:
        raise DecisionError(f"cannot reach {server.url}: {type(exc).__name__}") from None
    if answer.status_code not in (200, 201):
        try:
            code = answer.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = str(answer.status_code)
        raise DecisionError(f"the execution server refused the signed decision: {code}")
    return f"submitted to {server.url}{route}"


def revoke_grant(server: WatchedServer, grant_id: str) -> str:
    """Revoke a grant on its server (``POST /grants/{id}/revoke``); return what happened, for the history.

    Raises:
        DecisionError: The server cannot be reached, or answered anything but 200.
    """
    try:
        with _client(server) as client:
            answer = client.post(f"/grants/{grant_id}/revoke")
    except httpx.HTTPError as exc:
        raise DecisionError(f"cannot reach {server.url}: {type(exc).__name__}") from None
    if answer.status_code != 200:
        raise DecisionError(f"the execution server refused the revocation ({answer.status_code})")
    return f"submitted to {server.url}/grants/{grant_id}/revoke"


def tool_info(server: WatchedServer, action: str) -> dict[str, Any] | None:
    """Return ``{"title", "description", "annotations", "policy"}`` of ``action`` from the server's tools/list.

    Best effort: ``None`` when the MCP round trip fails (no MCP endpoint, an error, a malformed
    answer) or the server does not list ``action``.
    """
    try:
        return _tool_info(server, action)
    except Exception as exc:  # any failure of the MCP round trip: the page says it is unavailable
        logger.info("tools/list of %s failed: %s", server.url, type(exc).__name__)
        return None


def _tool_info(server: WatchedServer, action: str) -> dict[str, Any] | None:
    """tools/list over streamable HTTP (stateless JSON-RPC POSTs); find ``action``."""
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": "2025-06-18",
    }
    if server.token:
        headers["Authorization"] = f"Bearer {server.token}"
    with httpx.Client(base_url=server.url, headers=headers, timeout=_TIMEOUT) as client:
        init = client.post(
            "/mcp",
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "openexec-governance", "version": "1"},
                },
            },
        )
        session = init.headers.get("mcp-session-id")
        if session:
            client.headers["mcp-session-id"] = session
        client.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        listed = client.post("/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    tools = _jsonrpc_result(listed)["tools"]
    for tool in tools:
        if tool.get("name") == action:
            meta: dict[str, Any] = tool.get("_meta") or {}
            policy = meta.get("dev.openexec/approval")
            return {
                "title": tool.get("title"),
                "description": tool.get("description"),
                "annotations": tool.get("annotations") or {},
                "policy": policy,
            }
    return None


def _jsonrpc_result(answer: httpx.Response) -> dict[str, Any]:
    text = answer.text
    if answer.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
        text = data[-1]
    result: dict[str, Any] = json.loads(text)["result"]
    return result
