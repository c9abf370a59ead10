"""The real actions in a real ``openexec-mcp serve`` process, configured by a TOML file (SPEC §9, §12).

The credential of ``http_request`` must reach the HTTP server and appear nowhere else: not in the
envelope, the receipt body, the ledger export, the tool list, or the server's stderr.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from conftest import server_env
from mcp import Client
from oe_testing import verifier
from oe_testing.http_server import free_port
from oe_testing.origin import Origin, running_origin
from oe_testing.processes import http_server, run_cli
from oe_testing.smtp import SmtpServer, running_smtp

pytestmark = pytest.mark.slow

SECRET = "tok-e2e-91f0c3b7d25a"
CONFIG = """
[actions]
builtins = ["http_request", "send_email"]

[actions.http_request]
allowed_urls = ["http://127.0.0.1:{port}/*"]
methods = ["GET", "POST"]
timeout_seconds = 5
max_response_bytes = 65536
follow_redirects = false

[[actions.http_request.credentials]]
url = "http://127.0.0.1:{port}/echo*"
header = "Authorization"
value = "env:OE_E2E_ORIGIN_TOKEN"

[actions.send_email]
smtp_url = "{smtp_url}"
from = "agent@example.com"
allowed_recipients = ["*@example.com"]
timeout_seconds = 5
"""


async def list_tools_and_call(url: str, echo_url: str) -> tuple[str, str]:
    """``tools/list``, then the credentialed call as an agent over MCP makes it; both as JSON text."""
    async with Client(url) as client:
        listed = await client.list_tools()
        called = await client.call_tool("http_request", {"method": "GET", "url": echo_url, "nonce": "e2e-mcp-0001"})
    tools = json.dumps([tool.model_dump(mode="json") for tool in listed.tools])
    return tools, json.dumps(called.model_dump(mode="json"))


@pytest.fixture
def origin() -> Iterator[Origin]:
    with running_origin() as server:
        yield server


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with running_smtp(free_port()) as server:
        yield server


@pytest.fixture
def config_file(tmp_path: Path, origin: Origin, smtp: SmtpServer) -> Path:
    path = tmp_path / "openexec.toml"
    path.write_text(CONFIG.format(port=origin.port, smtp_url=smtp.url))
    return path


def test_credential_reaches_the_server_and_appears_nowhere_else(
    tmp_path: Path, origin: Origin, config_file: Path
) -> None:
    env = server_env(tmp_path / "state", OE_E2E_ORIGIN_TOKEN=f"Bearer {SECRET}")
    with http_server(env, tmp_path, "--config", str(config_file)) as server:
        response = server.execute(
            "http_request", {"method": "POST", "url": origin.url("/echo"), "body": "hi"}, "e2e-cred-0001"
        )
        assert response.status_code == 200, response.text
        envelope = response.json()
        keys = httpx.get(server.base_url + "/keys", timeout=10).json()
        body = verifier.verify_envelope(envelope, keys)
        assert body["status"] == "executed"
        assert body["result_hash"] == verifier.result_hash(envelope["result"])
        tools, mcp_call = anyio.run(list_tools_and_call, server.base_url + "/mcp", origin.url("/echo"))
    assert envelope["result"]["headers"]["x-echo"] == "[redacted]"
    exported = run_cli("ledger", "export", "--config", str(config_file), env=env)
    assert exported.returncode == 0, exported.stderr
    receipt_bodies = [
        base64.b64decode(line["receipt"]["payload"]).decode() for line in map(json.loads, exported.stdout.splitlines())
    ]
    places = {
        "envelope": response.text,
        "receipt body": base64.b64decode(envelope["receipt"]["payload"]).decode(),
        "ledger export": exported.stdout + "".join(receipt_bodies),
        "server stderr": server.log.read_text(),
        "tools/list": tools,
        "MCP tools/call result": mcp_call,
    }
    assert [hit.headers["Authorization"] for hit in origin.hits("/echo")] == [f"Bearer {SECRET}"] * 2
    assert json.loads(mcp_call)["structured_content"]["status"] == "executed"
    listed = {tool["name"]: tool for tool in json.loads(tools)}
    assert listed["http_request"]["annotations"]["destructive_hint"] is True
    assert listed["http_request"]["annotations"]["open_world_hint"] is True
    assert listed["send_email"]["annotations"]["idempotent_hint"] is False
    assert "openexec-mcp ready" in places["server stderr"]  # the log is really there to search
    for place, text in places.items():
        assert SECRET not in text, f"the credential leaked into the {place}"


def test_send_email_over_execute_as_in_the_readme(tmp_path: Path, smtp: SmtpServer, config_file: Path) -> None:
    env = server_env(tmp_path / "state", OE_E2E_ORIGIN_TOKEN=f"Bearer {SECRET}")
    payload = {"to": ["alice@example.com"], "subject": "Deploy finished", "text": "v1.4.2 is live."}
    with http_server(env, tmp_path, "--config", str(config_file)) as server:
        first = server.execute("send_email", payload, "deploy-2026-12-01-001")
        again = server.execute("send_email", payload, "deploy-2026-12-01-001")
    assert first.status_code == 200 and first.json()["status"] == "executed"
    assert again.status_code == 200 and again.json()["status"] == "replayed"
    assert len(smtp.recorder.delivered) == 1
    assert smtp.recorder.delivered[0].message["Message-ID"] == first.json()["result"]["message_id"]


def test_unset_credential_variable_refuses_to_start_with_exit_2(tmp_path: Path, config_file: Path) -> None:
    env = server_env(tmp_path / "state")  # OE_E2E_ORIGIN_TOKEN not set
    outcome = run_cli("serve", "--config", str(config_file), "--transport", "http", "--port", str(free_port()), env=env)
    assert outcome.returncode == 2
    assert "actions.http_request.credentials[0].value" in outcome.stderr
    assert "Traceback" not in outcome.stderr


def test_builtin_without_its_table_refuses_to_start_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "bare.toml"
    config.write_text('[actions]\nbuiltins = ["send_email"]\n')
    outcome = run_cli("serve", "--config", str(config), env=server_env(tmp_path / "state"))
    assert outcome.returncode == 2
    assert "[actions.send_email]" in outcome.stderr and "Traceback" not in outcome.stderr
