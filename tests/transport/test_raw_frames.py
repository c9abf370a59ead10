"""Attacks on the raw bytes of MCP frames, over stdio, streamable HTTP and SSE (SPEC §2, §10).

An SDK client cannot send a duplicate key or a lone surrogate (it serializes dicts), so these
tests write the JSON-RPC frames by hand against real server processes: a ``serve`` subprocess on
stdio, and one ``serve --transport http`` subprocess for ``/mcp`` and ``/sse`` + ``/messages/``.
Each asserts the ``invalid_request`` envelope for that request id, that ``count`` never ran, and
that the ledger did not grow.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from conftest import module_env, server_env
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from oe_testing.actions import executions
from oe_testing.http_server import HttpServer, running_http_server
from oe_testing.nonces import fresh_nonce

HANDSHAKE_ERA = "2025-11-25"
INIT = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {"protocolVersion": HANDSHAKE_ERA, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def dup_key_call(request_id: int) -> bytes:
    """``count`` with ``label`` twice: last-key-wins would run it with the second label."""
    return (
        b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"count",'
        b'"arguments":{"label":"shown","label":"executed","nonce":"%s"}}}' % (request_id, fresh_nonce().encode())
    )


def surrogate_call(request_id: int) -> bytes:
    return (
        b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"count",'
        b'"arguments":{"label":"\\ud800","nonce":"%s"}}}' % (request_id, fresh_nonce().encode())
    )


def nan_call(request_id: int) -> bytes:
    return (
        b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo",'
        b'"arguments":{"x":NaN,"nonce":"%s"}}}' % (request_id, fresh_nonce().encode())
    )


def huge_call(request_id: int) -> bytes:
    """A 4 MiB argument: refused on its raw size, before any canonicalization."""
    return (
        b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"count",'
        b'"arguments":{"label":"%s","nonce":"%s"}}}'
        % (request_id, b"a" * (4 * 1024 * 1024 - 300), fresh_nonce().encode())
    )


ATTACKS = {
    "duplicate-key": dup_key_call,
    "lone-surrogate": surrogate_call,
    "nan": nan_call,
    "4-mib-argument": huge_call,
}


def assert_invalid_request_envelope(answer: dict[str, Any], request_id: int) -> None:
    assert answer["id"] == request_id and "error" not in answer, answer
    result = answer["result"]
    assert result["isError"] is True
    envelope = result["structuredContent"]
    assert envelope["status"] == "denied" and envelope["exec_id"] is None
    assert envelope["error"]["code"] == "invalid_request"
    assert envelope["receipt_hash"] is None and "receipt" not in envelope
    assert "None" not in result["content"][0]["text"]


# -- stdio ------------------------------------------------------------------------------------------


class StdioPeer:
    """A ``serve`` subprocess spoken to in raw JSON lines."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "openexec_mcp", "serve", "--log-level", "WARNING"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    def send(self, frame: bytes | dict[str, Any]) -> None:
        data = frame if isinstance(frame, bytes) else json.dumps(frame).encode()
        assert self.process.stdin is not None
        self.process.stdin.write(data + b"\n")
        self.process.stdin.flush()

    def answer(self, request_id: int | None) -> dict[str, Any]:
        """Read lines until the answer to ``request_id`` (the server's own requests are skipped)."""
        assert self.process.stdout is not None
        while True:
            line = self.process.stdout.readline()
            assert line, "the server closed stdout without answering"
            message = json.loads(line)
            if message.get("id") == request_id and "method" not in message:
                return message

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture
def stdio(state_dir: Path) -> Iterator[StdioPeer]:
    peer = StdioPeer(server_env(state_dir))
    peer.send(INIT)
    peer.answer(0)
    peer.send(INITIALIZED)
    yield peer
    peer.close()


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_malformed_tools_call_over_stdio_answers_invalid_request_and_runs_nothing(
    stdio: StdioPeer, counter_file: Path, attack: str
) -> None:
    stdio.send(ATTACKS[attack](7))
    assert_invalid_request_envelope(stdio.answer(7), 7)
    # The connection still serves, and the refused call left its nonce free and ran nothing.
    stdio.send(
        {
            "jsonrpc": "2.0",
            "id": 8,
            "method": "tools/call",
            "params": {"name": "count", "arguments": {"label": "ok", "nonce": fresh_nonce()}},
        }
    )
    ok = stdio.answer(8)["result"]
    assert ok["structuredContent"]["status"] == "executed"
    assert ok["structuredContent"]["receipt"]["payloadType"].startswith("application/vnd.openexec.receipt")
    assert executions(counter_file) == 1 and counter_file.read_text() == "ok\n"


@pytest.mark.parametrize(
    "frame",
    [
        b'{"jsonrpc":"2.0","id":9,"method":"prompts/get","params":{"name":"\\udc00"}}',
        b'{"jsonrpc":"2.0","id":9,"method":"ping","method":"tools/list"}',
        b'{"jsonrpc":"2.0","id":9,"method":42}',
        b'{"jsonrpc":"2.0","id":9,"method":"tools/call","params":[1]}',
    ],
    ids=["lone-surrogate", "duplicate-key", "method-not-a-string", "params-not-an-object"],
)
def test_unreadable_request_over_stdio_gets_invalid_request_for_its_id_never_silence(
    stdio: StdioPeer, counter_file: Path, frame: bytes
) -> None:
    stdio.send(frame)
    answer = stdio.answer(9)
    assert answer["error"]["code"] == -32600
    stdio.send({"jsonrpc": "2.0", "id": 10, "method": "ping"})
    assert stdio.answer(10)["result"] == {}
    assert executions(counter_file) == 0


def test_line_that_is_not_json_over_stdio_gets_a_parse_error(stdio: StdioPeer) -> None:
    stdio.send(b"this is not json")
    assert stdio.answer(None)["error"]["code"] == -32700  # type: ignore[arg-type]
    stdio.send({"jsonrpc": "2.0", "id": 11, "method": "ping"})
    assert stdio.answer(11)["result"] == {}


# -- streamable HTTP and SSE -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    root = tmp_path_factory.mktemp("raw-frames")
    with running_http_server(module_env(root), root) as server:
        yield server


def ledger_size(server: HttpServer) -> int:
    size: int = httpx.get(server.base_url + "/health", timeout=30).json()["ledger_size"]
    return size


def sse_messages(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:") and line[5:].strip()]


def streamable_session(http: httpx.Client, url: str) -> dict[str, str]:
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    opened = http.post(url, content=json.dumps(INIT), headers=headers)
    assert opened.status_code == 200, opened.text
    headers = {**headers, "mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": HANDSHAKE_ERA}
    assert http.post(url, content=json.dumps(INITIALIZED), headers=headers).status_code == 202
    return headers


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_malformed_tools_call_over_streamable_http_answers_invalid_request_and_runs_nothing(
    http_server: HttpServer, attack: str
) -> None:
    before = ledger_size(http_server)
    with httpx.Client(timeout=60) as http:
        headers = streamable_session(http, http_server.mcp_url)
        answer = http.post(http_server.mcp_url, content=ATTACKS[attack](5), headers=headers)
    assert answer.status_code == 200, answer.text
    messages = sse_messages(answer.text) if "event-stream" in answer.headers["content-type"] else [answer.json()]
    assert_invalid_request_envelope(messages[-1], 5)
    assert executions(http_server.counter) == 0 and ledger_size(http_server) == before


@pytest.mark.parametrize("attack", ["duplicate-key", "lone-surrogate", "nan"])
def test_malformed_tools_call_over_sse_answers_invalid_request_and_runs_nothing(
    http_server: HttpServer, attack: str
) -> None:
    before = ledger_size(http_server)
    with httpx.Client(timeout=60) as http, http.stream("GET", http_server.sse_url) as stream:
        lines = stream.iter_lines()
        endpoint = next(line[5:].strip() for line in lines if line.startswith("data:"))
        post = http_server.base_url + endpoint
        json_headers = {"content-type": "application/json"}
        assert http.post(post, content=json.dumps(INIT), headers=json_headers).status_code == 202
        answers = (json.loads(line[5:]) for line in lines if line.startswith("data:"))
        assert next(answers)["id"] == 0
        http.post(post, content=json.dumps(INITIALIZED), headers=json_headers)
        assert http.post(post, content=ATTACKS[attack](6), headers=json_headers).status_code == 202
        assert_invalid_request_envelope(next(answers), 6)
    assert executions(http_server.counter) == 0 and ledger_size(http_server) == before


def test_client_cannot_forge_the_ingress_marker_to_skip_the_check(http_server: HttpServer) -> None:
    frame = {
        "jsonrpc": "2.0",
        "id": 4,
        "method": "tools/call",
        "params": {
            "name": "count",
            "arguments": {"label": "x", "nonce": fresh_nonce()},
            "_meta": {"dev.openexec/ingress": {"seal": "0" * 32, "message": "forged"}},
        },
    }
    with httpx.Client(timeout=60) as http:
        headers = streamable_session(http, http_server.mcp_url)
        answer = http.post(http_server.mcp_url, content=json.dumps(frame), headers=headers)
    message = sse_messages(answer.text)[-1]
    assert_invalid_request_envelope(message, 4)
    assert "reserved" in message["result"]["structuredContent"]["error"]["message"]
    assert executions(http_server.counter) == 0


class DuplicatingTransport(httpx2.AsyncHTTPTransport):
    """An HTTP transport for the SDK client that adds a duplicate key to the bytes it sends."""

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        if b'"label":"shown"' in body:
            body = body.replace(b'"label":"shown"', b'"label":"shown","label":"executed"')
            headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"content-length"]
            request = httpx2.Request(request.method, request.url, headers=headers, content=body)
        return await super().handle_async_request(request)


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_sdk_client_whose_bytes_carry_a_duplicate_key_gets_invalid_request_in_both_eras(
    http_server: HttpServer, mode: str
) -> None:
    before = ledger_size(http_server)
    async with (
        httpx2.AsyncClient(transport=DuplicatingTransport(), timeout=60) as http,
        Client(streamable_http_client(http_server.mcp_url, http_client=http), mode=mode) as client,
    ):
        result = await client.call_tool("count", {"label": "shown", "nonce": fresh_nonce()})
    envelope = result.structured_content
    assert result.is_error and envelope is not None
    assert (envelope["status"], envelope["exec_id"], envelope["error"]["code"]) == ("denied", None, "invalid_request")
    assert "duplicate" in envelope["error"]["message"]
    assert executions(http_server.counter) == 0 and ledger_size(http_server) == before


def test_element_count_bound_refuses_only_what_no_payload_of_the_limit_can_hold() -> None:
    from openexec_mcp.core.canonical import canonicalize
    from openexec_mcp.transport.ingress import too_many_elements

    limit = 65536
    fits = [0] * (limit // 2 - 2)  # canonical: 2 bytes an element, just under the limit
    assert len(canonicalize(fits)) <= limit and too_many_elements(fits, limit) is None
    crowded = [[]] * (limit // 2 + 1)
    assert len(canonicalize(crowded)) > limit and too_many_elements(crowded, limit) is not None


def test_crowded_arguments_over_streamable_http_are_refused_before_canonicalization(http_server: HttpServer) -> None:
    frame = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"x": [0] * 40000, "nonce": fresh_nonce()}},
    }
    with httpx.Client(timeout=60) as http:
        headers = streamable_session(http, http_server.mcp_url)
        answer = http.post(http_server.mcp_url, content=json.dumps(frame), headers=headers)
    message = sse_messages(answer.text)[-1]
    assert_invalid_request_envelope(message, 3)
    assert "elements" in message["result"]["structuredContent"]["error"]["message"]
