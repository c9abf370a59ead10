"""End to end over every MCP transport and protocol era: real SDK client, real server process.

Each case is one long-lived connection (module-scoped): stdio in both eras (a subprocess per era),
streamable HTTP in both eras and legacy SSE (handshake era only) against one shared
``serve --transport http`` subprocess. Receipts are checked with ``oe_testing.verifier``, an
independent verifier written from SPEC.md, using only the key the server publishes
(``GET /keys``, or ``openexec-mcp keys public`` for stdio).
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from conftest import module_env
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp_types import CallToolResult
from oe_testing import verifier
from oe_testing.http_server import HttpServer, running_http_server
from oe_testing.nonces import fresh_nonce
from oe_testing.processes import published_keys
from oe_testing.receipts import envelope_of

HANDSHAKE_ERA = "2025-11-25"
MODERN_ERA = "2026-07-28"
EXPECTED_ERA = {"legacy": HANDSHAKE_ERA, "auto": MODERN_ERA}
ENVELOPE_FIELDS = {"status", "exec_id", "action", "result", "error", "approval_request", "receipt", "receipt_hash"}
RUN_ID_META = "dev.openexec/run_id"

CASES = [("stdio", "legacy"), ("stdio", "auto"), ("http", "legacy"), ("http", "auto"), ("sse", "legacy")]


@dataclass(frozen=True)
class Connection:
    client: Client
    transport: str
    mode: str
    keys: dict[str, Any]
    counter: Path

    def executions(self) -> int:
        return len(self.counter.read_text().splitlines()) if self.counter.exists() else 0

    async def call(self, name: str, arguments: dict[str, Any], meta: dict[str, Any] | None = None) -> CallToolResult:
        return await self.client.call_tool(name, arguments, meta=meta)  # pyright: ignore[reportArgumentType]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    root = tmp_path_factory.mktemp("http-server")
    with running_http_server(module_env(root), root) as server:
        yield server


@pytest.fixture(scope="module", params=CASES, ids=[f"{t}-{m}" for t, m in CASES])
async def conn(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, anyio_backend: str
) -> AsyncIterator[Connection]:
    transport, mode = request.param
    target: Any
    if transport == "stdio":
        root = tmp_path_factory.mktemp(f"stdio-{mode}")
        env = module_env(root)
        # The published key, as an auditor gets it for a stdio server: the CLI on the same state dir.
        keys = published_keys(env)
        counter = Path(env["OPENEXEC_TEST_COUNTER"])
        target = StdioServerParameters(
            command=sys.executable, args=["-m", "openexec_mcp", "serve", "--log-level", "WARNING"], env=env
        )
    else:
        server: HttpServer = request.getfixturevalue("http_server")
        async with httpx.AsyncClient() as http:
            keys = (await http.get(server.base_url + "/keys")).json()
        counter = server.counter
        target = server.mcp_url if transport == "http" else sse_client(server.sse_url)
    async with Client(target, mode=mode) as client:
        yield Connection(client, transport, mode, keys, counter)


# -- protocol and tools/list ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_client_negotiates_the_expected_protocol_era(conn: Connection) -> None:
    assert conn.client.protocol_version == EXPECTED_ERA[conn.mode]


@pytest.mark.anyio
async def test_tools_list_advertises_every_action_once(conn: Connection) -> None:
    tools = (await conn.client.list_tools()).tools
    names = [tool.name for tool in tools]
    assert sorted(names) == ["add", "boom", "count", "count_then_crash", "echo", "not_json"]


@pytest.mark.anyio
async def test_every_tool_requires_a_nonce_matching_the_spec_pattern(conn: Connection) -> None:
    for tool in (await conn.client.list_tools()).tools:
        schema = tool.input_schema
        assert "nonce" in schema["required"], tool.name
        nonce_schema = jsonschema.Draft202012Validator(schema["properties"]["nonce"])
        # SPEC §1: a string of 8 to 128 characters of [A-Za-z0-9._:-].
        for good in ("abcdefgh", "A.b_c:d-1", "x" * 128):
            assert nonce_schema.is_valid(good), (tool.name, good)
        for bad in ("abcdefg", "x" * 129, "has space", "bad/char", "ünïcode-x", 12345678, None):
            assert not nonce_schema.is_valid(bad), (tool.name, bad)


@pytest.mark.anyio
async def test_add_input_schema_refuses_strings_and_undeclared_arguments(conn: Connection) -> None:
    (add,) = [tool for tool in (await conn.client.list_tools()).tools if tool.name == "add"]
    schema = jsonschema.Draft202012Validator(add.input_schema)
    assert schema.is_valid({"a": 1, "b": 2.5, "nonce": "abcdefgh"})
    assert not schema.is_valid({"a": "1", "b": 2, "nonce": "abcdefgh"})
    assert not schema.is_valid({"a": 1, "b": 2})
    assert not schema.is_valid({"a": 1, "b": 2, "c": 3, "nonce": "abcdefgh"})


@pytest.mark.anyio
async def test_output_schema_is_the_result_envelope(conn: Connection) -> None:
    for tool in (await conn.client.list_tools()).tools:
        schema = tool.output_schema
        assert schema is not None, tool.name
        assert schema["type"] == "object"
        assert set(schema["properties"]) == ENVELOPE_FIELDS, tool.name
        assert set(schema["properties"]["status"]["enum"]) == {
            "executed",
            "replayed",
            "failed",
            "denied",
            "indeterminate",
        }
        # receipt is the only field that may be absent (SPEC §6, invalid_request).
        assert set(schema["required"]) == ENVELOPE_FIELDS - {"receipt"}, tool.name


@pytest.mark.anyio
async def test_annotations_and_approval_meta_come_from_the_action(conn: Connection) -> None:
    tools = {tool.name: tool for tool in (await conn.client.list_tools()).tools}
    expected = {
        # name: (title, readOnly, destructive, idempotent, openWorld)
        "echo": ("Echo", True, False, True, False),
        "add": ("Add two numbers", True, False, True, False),
        "count": ("Count executions", False, False, False, None),
    }
    for name, (title, read_only, destructive, idempotent, open_world) in expected.items():
        annotations = tools[name].annotations
        assert annotations is not None, name
        assert annotations.title == title
        assert annotations.read_only_hint is read_only, name
        assert annotations.destructive_hint is destructive, name
        assert annotations.idempotent_hint is idempotent, name
        if open_world is not None:
            assert annotations.open_world_hint is open_world, name
    for tool in tools.values():
        assert tool.meta is not None and tool.meta["dev.openexec/approval"] == "auto", tool.name


# -- calls -----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_echo_returns_executed_envelope_with_receipt_verified_by_published_key(conn: Connection) -> None:
    nonce = fresh_nonce()
    result = await conn.call("echo", {"msg": "hi", "n": 1, "nonce": nonce})
    envelope = envelope_of(result)

    assert result.is_error is False
    assert set(envelope) == ENVELOPE_FIELDS
    assert envelope["status"] == "executed"
    assert envelope["action"] == "echo"
    assert envelope["result"] == {"echo": {"msg": "hi", "n": 1}}
    assert envelope["error"] is None and envelope["approval_request"] is None
    assert len(result.content) == 1 and "\n" not in result.content[0].text  # type: ignore[union-attr]

    body = verifier.verify_envelope(envelope, conn.keys)
    assert body["status"] == "executed" and body["error_code"] is None
    assert body["nonce"] == nonce
    assert body["action_hash"] == verifier.action_hash("echo", {"msg": "hi", "n": 1}, nonce)
    assert body["result_hash"] == verifier.result_hash(envelope["result"])
    assert body["approval"] == {
        "method": "auto",
        "approval_id": None,
        "kid": None,
        "issued_by": None,
        "artifact_hash": None,
    }
    assert body["original_exec_id"] is None
    assert body["log_id"] == "openexec-mcp" and body["tenant_id"] == "default"
    assert body["server"]["name"] == "openexec-mcp"


@pytest.mark.anyio
async def test_add_returns_the_numeric_sum(conn: Connection) -> None:
    result = await conn.call("add", {"a": 1, "b": 2.5, "nonce": fresh_nonce()})
    envelope = envelope_of(result)
    assert result.is_error is False
    assert envelope["status"] == "executed"
    assert envelope["result"] == {"sum": 3.5}
    body = verifier.verify_envelope(envelope, conn.keys)
    assert body["result_hash"] == verifier.result_hash({"sum": 3.5})


@pytest.mark.anyio
async def test_replayed_nonce_does_not_run_handler_again(conn: Connection) -> None:
    nonce = fresh_nonce()
    before = conn.executions()
    first = envelope_of(await conn.call("count", {"label": "replay", "nonce": nonce}))
    second_result = await conn.call("count", {"label": "replay", "nonce": nonce})
    second = envelope_of(second_result)

    assert first["status"] == "executed"
    assert second["status"] == "replayed"
    assert second_result.is_error is False
    assert conn.executions() == before + 1
    assert second["result"] == first["result"]
    assert second["exec_id"] != first["exec_id"]
    replay_body = verifier.verify_envelope(second, conn.keys)
    first_body = verifier.verify_envelope(first, conn.keys)
    assert replay_body["status"] == "replayed"
    assert replay_body["original_exec_id"] == first["exec_id"]
    assert replay_body["result_hash"] == first_body["result_hash"]


@pytest.mark.anyio
async def test_same_nonce_with_other_arguments_is_nonce_conflict(conn: Connection) -> None:
    nonce = fresh_nonce()
    before = conn.executions()
    first = envelope_of(await conn.call("count", {"label": "a", "nonce": nonce}))
    result = await conn.call("count", {"label": "b", "nonce": nonce})
    conflict = envelope_of(result)

    assert first["status"] == "executed"
    assert result.is_error is True
    assert conflict["status"] == "denied"
    assert conflict["error"]["code"] == "nonce_conflict"
    assert conflict["result"] is None
    assert conn.executions() == before + 1
    body = verifier.verify_envelope(conflict, conn.keys)
    assert body["status"] == "denied" and body["error_code"] == "nonce_conflict"


@pytest.mark.anyio
async def test_unknown_tool_is_refused_without_receipt(conn: Connection) -> None:
    result = await conn.call("no_such_tool", {"nonce": fresh_nonce()})
    envelope = envelope_of(result)
    assert result.is_error is True
    assert envelope["status"] == "denied"
    assert envelope["error"]["code"] == "unknown_action"
    assert envelope["exec_id"] is None
    assert "receipt" not in envelope and envelope["receipt_hash"] is None


@pytest.mark.anyio
async def test_string_argument_to_add_is_invalid_request_and_leaves_nonce_free(conn: Connection) -> None:
    nonce = fresh_nonce()
    result = await conn.call("add", {"a": "1", "b": 2, "nonce": nonce})
    envelope = envelope_of(result)

    assert result.is_error is True
    assert envelope["status"] == "denied"
    assert envelope["error"]["code"] == "invalid_request"
    assert envelope["exec_id"] is None and envelope["result"] is None
    assert "receipt" not in envelope and envelope["receipt_hash"] is None
    # Nothing was recorded (SPEC §10): the corrected call with the same nonce executes.
    retry = envelope_of(await conn.call("add", {"a": 1, "b": 2, "nonce": nonce}))
    assert retry["status"] == "executed"
    assert retry["result"] == {"sum": 3}


@pytest.mark.anyio
@pytest.mark.parametrize("nonce", [None, "short", "has space!", "x" * 129])
async def test_missing_or_malformed_nonce_is_invalid_request(conn: Connection, nonce: str | None) -> None:
    arguments: dict[str, Any] = {"label": "never"} if nonce is None else {"label": "never", "nonce": nonce}
    before = conn.executions()
    result = await conn.call("count", arguments)
    envelope = envelope_of(result)
    assert result.is_error is True
    assert envelope["error"]["code"] == "invalid_request"
    assert "receipt" not in envelope
    assert conn.executions() == before


@pytest.mark.anyio
async def test_integer_beyond_2_pow_53_is_invalid_request(conn: Connection) -> None:
    result = await conn.call("echo", {"big": 2**53, "nonce": fresh_nonce()})
    envelope = envelope_of(result)
    assert result.is_error is True
    assert envelope["error"]["code"] == "invalid_request"
    assert "receipt" not in envelope


@pytest.mark.anyio
@pytest.mark.parametrize("run_id", [123, "", "x" * 129, "has space"], ids=["int", "empty", "too-long", "space"])
async def test_malformed_run_id_is_invalid_request_without_receipt(conn: Connection, run_id: Any) -> None:
    result = await conn.call("echo", {"nonce": fresh_nonce()}, meta={RUN_ID_META: run_id})
    envelope = envelope_of(result)
    assert result.is_error is True
    assert envelope["error"]["code"] == "invalid_request"
    assert "receipt" not in envelope


@pytest.mark.anyio
async def test_failing_handler_is_failed_with_receipt_and_no_exception_text(conn: Connection) -> None:
    result = await conn.call("boom", {"nonce": fresh_nonce()})
    envelope = envelope_of(result)
    assert result.is_error is True
    assert envelope["status"] == "failed"
    assert envelope["error"]["code"] == "handler_error"
    assert "secret internal detail" not in json.dumps(result.model_dump(mode="json"))
    body = verifier.verify_envelope(envelope, conn.keys)
    assert body["status"] == "failed" and body["error_code"] == "handler_error" and body["result_hash"] is None


@pytest.mark.anyio
async def test_run_id_from_request_meta_is_recorded_in_receipt(conn: Connection) -> None:
    run_id = f"run-{conn.transport}-{conn.mode}-{uuid.uuid4().hex[:8]}"
    envelope = envelope_of(await conn.call("echo", {"x": 1, "nonce": fresh_nonce()}, meta={RUN_ID_META: run_id}))
    assert envelope["status"] == "executed"
    assert verifier.verify_envelope(envelope, conn.keys)["run_id"] == run_id


@pytest.mark.anyio
async def test_calls_without_run_id_share_the_session_or_connection_run(
    conn: Connection, request: pytest.FixtureRequest
) -> None:
    if conn.transport == "http" and conn.mode == "auto":
        pytest.skip("2026-07-28 streamable HTTP has no session and no lasting connection to group calls by")
    first = envelope_of(await conn.call("echo", {"nonce": fresh_nonce()}))
    second = envelope_of(await conn.call("echo", {"nonce": fresh_nonce()}))
    first_run = verifier.verify_envelope(first, conn.keys)["run_id"]
    second_run = verifier.verify_envelope(second, conn.keys)["run_id"]
    # SPEC §7: else the MCP session, else one per connection (a stdio process is one connection).
    assert first_run == second_run


@pytest.mark.anyio
async def test_receipts_chain_by_seq_and_prev_across_calls(conn: Connection) -> None:
    bodies, hashes = [], []
    for _ in range(3):
        envelope = envelope_of(await conn.call("echo", {"nonce": fresh_nonce()}))
        bodies.append(verifier.verify_envelope(envelope, conn.keys))
        hashes.append(verifier.receipt_hash(envelope["receipt"]))
    for earlier, later, earlier_hash in zip(bodies, bodies[1:], hashes, strict=False):
        assert later["seq"] == earlier["seq"] + 1
        assert later["prev"] == earlier_hash
