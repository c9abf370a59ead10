"""Attacks on the HTTP surface and what MCP clients see (issue 9; SPEC §6, §8, §10)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import server_env
from mcp import Client
from mcp.shared.exceptions import MCPError
from oe_testing.actions import executions
from oe_testing.approvals import approvals_config, mint
from oe_testing.http_server import running_http_server
from oe_testing.nonces import fresh_nonce
from oe_testing.postgres import fresh_schema, require_postgres

from openexec_mcp.core.action import action_request_bytes
from openexec_mcp.core.canonical import canonicalize, sha256_hex
from openexec_mcp.runtime import Runtime
from openexec_mcp.transport.http.app import build_http_app

ENVELOPE_FIELDS = {"status", "exec_id", "action", "result", "error", "approval_request", "receipt_hash"}


def client_for(runtime: Runtime, host: str = "127.0.0.1") -> httpx.AsyncClient:
    app = build_http_app(runtime, host=host, port=8000)
    base = f"http://[{host}]" if ":" in host else f"http://{host}"
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base)


@pytest.fixture
async def signed_http(make_runtime: Callable[..., Runtime]) -> AsyncIterator[httpx.AsyncClient]:
    runtime = make_runtime(
        mode="clawshield", approvals=approvals_config(), policy={"actions": {"count": {"approval": "signed"}}}
    )
    async with client_for(runtime) as http:
        yield http


# -- item 3: POST /execute answers the SPEC §6 envelope for every outcome ----------------------------


@pytest.mark.anyio
async def test_execute_with_an_artifact_expiring_in_year_9999_answers_an_envelope_not_a_bare_error(
    signed_http: httpx.AsyncClient, counter_file: Path
) -> None:
    call_nonce = fresh_nonce()
    action_hash = sha256_hex(action_request_bytes("count", call_nonce, canonicalize({})))
    artifact = mint(action_hash, expires_at="9999-12-31T23:59:59Z")
    answer = await signed_http.post(
        "/execute", json={"action": "count", "payload": {}, "nonce": call_nonce, "approval_artifact": artifact}
    )
    body = answer.json()
    assert set(body) >= ENVELOPE_FIELDS, body
    assert body["status"] == "denied" and body["error"]["code"] in ("approval_ttl_too_long", "internal_error")
    assert answer.status_code == (500 if body["error"]["code"] == "internal_error" else 403)
    assert "Traceback" not in answer.text and "Overflow" not in answer.text
    # Fail closed, on record (SPEC §10): past validation, every refusal carries a receipt.
    assert body["receipt_hash"] is not None and body["receipt"]["payloadType"].endswith("receipt+json")
    assert executions(counter_file) == 0


@pytest.mark.anyio
async def test_mcp_call_with_an_artifact_expiring_in_year_9999_fails_closed_on_record(
    make_runtime: Callable[..., Runtime], counter_file: Path
) -> None:
    from openexec_mcp.transport.mcp import build_mcp_server

    runtime = make_runtime(
        mode="clawshield", approvals=approvals_config(), policy={"actions": {"count": {"approval": "signed"}}}
    )
    call_nonce = fresh_nonce()
    action_hash = sha256_hex(action_request_bytes("count", call_nonce, canonicalize({})))
    artifact = mint(action_hash, expires_at="9999-12-31T23:59:59Z")
    async with Client(build_mcp_server(runtime.gate, lambda _ctx: "default")) as client:
        result = await client.call_tool("count", {"nonce": call_nonce}, meta={"dev.openexec/approval": artifact})
    envelope = result.structured_content
    assert result.is_error and envelope is not None
    assert envelope["error"]["code"] in ("approval_ttl_too_long", "internal_error")
    assert envelope["receipt_hash"] is not None and "Overflow" not in str(result.content)
    assert executions(counter_file) == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"action": "nope", "payload": {}, "nonce": "abcdefgh"}, 404, "unknown_action"),
        ({"action": "echo", "payload": {}, "nonce": "short"}, 422, "invalid_request"),
        ({"action": "echo", "payload": {}, "nonce": "abcdefgh", "run_id": 7}, 422, "invalid_request"),
        ({"action": "count", "payload": {}, "nonce": "abcdefgh"}, 403, "approval_required"),
    ],
)
async def test_every_execute_refusal_is_an_envelope_with_its_spec_status(
    signed_http: httpx.AsyncClient, counter_file: Path, body: dict[str, Any], status: int, code: str
) -> None:
    answer = await signed_http.post("/execute", json=body)
    assert answer.status_code == status and set(answer.json()) >= ENVELOPE_FIELDS
    assert answer.json()["error"]["code"] == code and answer.json()["status"] == "denied"
    assert executions(counter_file) == 0


# -- item 4: what MCP clients see ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_prompts_get_of_an_unknown_prompt_is_invalid_params(make_runtime: Callable[..., Runtime]) -> None:
    from openexec_mcp.transport.mcp import build_mcp_server

    runtime = make_runtime()
    async with Client(build_mcp_server(runtime.gate, lambda _ctx: "default")) as client:
        with pytest.raises(MCPError) as refused:
            await client.get_prompt("no-such-prompt")
    assert refused.value.error.code == -32602


@pytest.mark.anyio
async def test_refusal_summary_and_tool_descriptions_are_plain_text_for_models(
    make_runtime: Callable[..., Runtime],
) -> None:
    from openexec_mcp.transport.mcp import build_mcp_server

    runtime = make_runtime()
    async with Client(build_mcp_server(runtime.gate, lambda _ctx: "default")) as client:
        refused = await client.call_tool("add", {"a": "1", "b": 2, "nonce": fresh_nonce()})
        tools = (await client.list_tools()).tools
    text = refused.content[0].text  # type: ignore[union-attr]
    assert refused.is_error and "invalid_request" in text
    assert "None" not in text and "exec_id=" not in text
    assert tools and all("``" not in (tool.description or "") for tool in tools)


# -- item 7: the browser guard on every loopback bind ---------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("127.255.0.9", True),
        ("::1", True),
        ("0:0:0:0:0:0:0:1", True),
        ("[::1]", True),
        ("localhost", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("10.0.0.1", False),
        ("::", False),
        ("example.com", False),
        ("128.0.0.1", False),
    ],
)
def test_loopback_is_decided_by_address_not_spelling(host: str, loopback: bool) -> None:
    from openexec_mcp.transport.http.guards import is_loopback

    assert is_loopback(host) is loopback


@pytest.mark.parametrize("host", ["127.0.0.2", "0:0:0:0:0:0:0:1"])
@pytest.mark.parametrize("path", ["/execute", "/mcp"])
def test_cross_site_page_cannot_drive_a_server_bound_to_another_loopback_spelling(
    make_runtime: Callable[..., Runtime], counter_file: Path, host: str, path: str
) -> None:
    from starlette.testclient import TestClient

    runtime = make_runtime()
    app = build_http_app(runtime, host=host, port=8000)
    base = f"http://[{host}]" if ":" in host else f"http://{host}"
    mcp_headers = {"accept": "application/json, text/event-stream"}
    with TestClient(app, base_url=base) as http:  # runs the lifespan: /mcp is served
        body = {"action": "count", "payload": {}, "nonce": fresh_nonce()}
        if path == "/mcp":
            body = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": "count", "arguments": {"nonce": fresh_nonce()}},
            }
        rebound = http.post(path, json=body, headers={**mcp_headers, "host": "evil.example"})
        cross_site = http.post(path, json=body, headers={**mcp_headers, "origin": "http://evil.example"})
        health = http.get("/health", headers={"host": "evil.example"})
    assert rebound.status_code == 421 and cross_site.status_code == 403
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert executions(counter_file) == 0


# -- item 8: rate limit on the read and approval routes --------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/ledger/checkpoint"),
        ("GET", "/ledger/proof/" + "f" * 32),
        ("POST", "/receipts/verify"),
        ("GET", "/approvals"),
        ("POST", "/approvals"),
    ],
)
async def test_flood_of_read_and_approval_requests_is_rate_limited_per_client(
    make_runtime: Callable[..., Runtime], method: str, path: str
) -> None:
    runtime = make_runtime(limits={"rate_limit_per_second": 0.001, "rate_limit_burst": 3})
    size_before = runtime.store.ledger_size()
    async with client_for(runtime) as http:
        statuses = [(await http.request(method, path, json={})).status_code for _ in range(5)]
        refused = await http.request(method, path, json={})
    assert statuses[:3] == [s for s in statuses[:3] if s != 429] and statuses[3:] == [429, 429]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert runtime.store.ledger_size() == size_before


# -- items 5, 6: session cap per tenant, read deadline (real server processes) ---------------------------


def tokens_config(tmp_path: Path, **extra: str) -> dict[str, str]:
    config = tmp_path / "openexec.toml"
    lines = [
        f'[[auth.tokens]]\nsha256 = "{hashlib.sha256(t.encode()).hexdigest()}"\ntenant_id = "{t}"\n'
        'scopes = ["execute", "read"]\n'
        for t in ("greedy", "other")
    ]
    config.write_text("[mcp]\nmax_sessions_per_tenant = 2\n" + "".join(lines))
    return server_env(tmp_path / "state", OPENEXEC_CONFIG=str(config), **extra)


INIT = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
}


def open_session(http: httpx.Client, url: str, token: str) -> httpx.Response:
    headers = {
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "authorization": f"Bearer {token}",
    }
    return http.post(url, content=json.dumps(INIT), headers=headers)


def test_one_token_opening_sessions_cannot_lock_other_tenants_out_of_mcp(tmp_path: Path) -> None:
    with running_http_server(tokens_config(tmp_path), tmp_path) as server, httpx.Client(timeout=60) as http:
        opened = [open_session(http, server.mcp_url, "greedy") for _ in range(3)]
        other = open_session(http, server.mcp_url, "other")
    assert [r.status_code for r in opened] == [200, 200, 503]
    assert opened[2].json()["error"]["message"] == "too many open sessions for this tenant"
    assert other.status_code == 200 and other.headers["mcp-session-id"]


TRICKLES = {
    "headers": (b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"X-Slow: 1\r\n"),
    "body": (
        b"POST /execute HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n{",
        b" ",
    ),
}


@pytest.mark.parametrize("part", list(TRICKLES))
def test_client_trickling_its_request_is_disconnected(tmp_path: Path, counter_file: Path, part: str) -> None:
    env = server_env(tmp_path / "state", OPENEXEC_HTTP__REQUEST_READ_TIMEOUT_SECONDS="1")
    opening, drip = TRICKLES[part]
    with running_http_server(env, tmp_path) as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(opening)
            closed = False
            deadline = time.monotonic() + 30  # bounded wait for the close, not a timing assertion
            while time.monotonic() < deadline:
                try:
                    sock.sendall(drip)
                except OSError:
                    closed = True
                    break
                sock.settimeout(0.2)
                try:
                    if sock.recv(1024) == b"":
                        closed = True
                        break
                except TimeoutError:
                    pass
                except OSError:  # reset by the server: closed too
                    closed = True
                    break
        assert closed, "the server kept a trickling client's connection open"
        assert httpx.get(server.base_url + "/health", timeout=30).status_code == 200
    assert executions(counter_file) == 0


# -- item 9: a PostgreSQL outage shows store_unavailable, never the database's address ------------------


class Forwarder:
    """A loopback TCP forwarder to the test cluster; ``cut()`` is the outage (every connection drops)."""

    def __init__(self, target_port: int) -> None:
        import threading

        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()

    def cut(self) -> None:
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@pytest.mark.anyio
async def test_postgres_outage_answers_store_unavailable_without_host_port_or_driver_text(
    make_runtime: Callable[..., Runtime], counter_file: Path
) -> None:
    from urllib.parse import urlsplit

    base = require_postgres()
    target = urlsplit(base)
    with fresh_schema(base) as url:
        forwarder = Forwarder(target.port or 5432)
        proxied = url.replace(f"{target.hostname}:{target.port}", f"127.0.0.1:{forwarder.port}")
        runtime = make_runtime(storage={"url": proxied})
        async with client_for(runtime) as http:
            assert (
                await http.post("/execute", json={"action": "echo", "payload": {}, "nonce": fresh_nonce()})
            ).status_code == 200
            forwarder.cut()
            forwarder.thread.join(timeout=30)
            executed = await http.post("/execute", json={"action": "count", "payload": {}, "nonce": fresh_nonce()})
            health = await http.get("/health")
        runtime.close()
    leaks = [str(forwarder.port), str(target.port), "127.0.0.1", "psycopg", "PostgreSQL", "connection", "refused"]
    for answer in (executed, health):
        assert not [word for word in leaks if word in answer.text], answer.text
    assert executed.status_code == 503 and executed.json()["error"]["code"] == "store_unavailable"
    assert set(executed.json()) >= ENVELOPE_FIELDS
    # The ledger size may be served from memory; when it is not, the outage shows only as its code.
    assert health.status_code == 200 and health.json()["store"] in ("ok", "store_unavailable")
    assert executions(counter_file) == 0


def test_one_token_opening_sse_streams_cannot_lock_other_tenants_out_of_sse(tmp_path: Path) -> None:
    with (
        running_http_server(tokens_config(tmp_path), tmp_path) as server,
        httpx.Client(timeout=60) as http,
        contextlib.ExitStack() as streams,
    ):
        statuses = []
        for token in ("greedy", "greedy", "greedy", "other"):
            stream = streams.enter_context(
                http.stream("GET", server.sse_url, headers={"authorization": f"Bearer {token}"})
            )
            statuses.append(stream.status_code)
    assert statuses == [200, 200, 503, 200]
