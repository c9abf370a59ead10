"""Propose -> approve -> execute with real processes (SPEC §5, §9; issue 3).

The server runs as ``openexec-mcp serve`` in clawshield mode with only the governance *public* key
(``CLAWSHIELD_PUBLIC_KEY``); the approver's side is the governance CLI as a subprocess
(``keys generate``, ``approvals list``, ``approve``), holding the private key the server never
sees. The agent's side is a real SDK ``Client`` over streamable HTTP and over stdio. For stdio
the approval inbox is the SQLite file in the state directory, so an HTTP server on the same state
directory serves the approver; or the artifact travels in the retry's
``_meta["dev.openexec/approval"]``. Receipts are checked with the server's published key by the
independent verifier of ``oe_testing.verifier`` and by ``openexec-mcp receipt verify``.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import module_env
from mcp import Client, StdioServerParameters
from oe_testing import verifier
from oe_testing.actions import executions
from oe_testing.http_server import HttpServer, running_http_server
from oe_testing.nonces import fresh_nonce
from oe_testing.processes import run_cli
from oe_testing.receipts import envelope_of

APPROVAL_META = "dev.openexec/approval"


@dataclass(frozen=True)
class Governance:
    """The approver's key pair, written by ``openexec-mcp keys generate``."""

    private_key: Path
    public_b64: str


@dataclass(frozen=True)
class Deployment:
    """A clawshield server: HTTP for the approver (and HTTP MCP clients), its env for stdio."""

    http: HttpServer
    env: dict[str, str]
    gov: Governance
    keys: dict[str, Any]

    def executions(self) -> int:
        return executions(self.http.counter)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def governance(tmp_path_factory: pytest.TempPathFactory) -> Governance:
    out = tmp_path_factory.mktemp("governance") / "keys"
    generated = run_cli("keys", "generate", "--out", str(out), env=module_env(out.parent))
    assert generated.returncode == 0, generated.stderr
    private_key, public_key = out / "governance.key", out / "governance.pub"
    assert stat.S_IMODE(private_key.stat().st_mode) == 0o600
    public_b64 = public_key.read_text().strip()
    assert f"CLAWSHIELD_PUBLIC_KEY={public_b64}" in generated.stdout
    return Governance(private_key, public_b64)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, governance: Governance) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("clawshield")
    env = module_env(root, CLAWSHIELD_PUBLIC_KEY=governance.public_b64, OPENEXEC_MODE="clawshield")
    with running_http_server(env, root) as http:
        keys = httpx.get(http.base_url + "/keys").json()
        yield Deployment(http, env, governance, keys)


@pytest.fixture(scope="module")
async def stdio_client(deployment: Deployment, anyio_backend: str) -> AsyncIterator[Client]:
    """A stdio server on the HTTP server's state directory: same ledger, same inbox, same key."""
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "openexec_mcp", "serve", "--log-level", "WARNING"], env=deployment.env
    )
    async with Client(params, mode="legacy") as client:
        yield client


def approvals_list(deployment: Deployment) -> str:
    listed = run_cli("approvals", "list", "--server", deployment.http.base_url, env=deployment.env)
    assert listed.returncode == 0, listed.stderr
    return listed.stdout


def approve(deployment: Deployment, request_id: str) -> subprocess.CompletedProcess[str]:
    approved = run_cli(
        "approve",
        request_id,
        "--key",
        str(deployment.gov.private_key),
        "--server",
        deployment.http.base_url,
        "--yes",
        env=deployment.env,
    )
    assert approved.returncode == 0, approved.stderr
    return approved


def check_executed_with_signed_approval(deployment: Deployment, envelope: dict[str, Any]) -> dict[str, Any]:
    assert (envelope["status"], envelope["error"]) == ("executed", None)
    body = verifier.verify_envelope(envelope, deployment.keys)
    approval = body["approval"]
    assert (approval["method"], approval["kid"], approval["issued_by"]) == ("signed", "clawshield", "clawshield")
    assert isinstance(approval["approval_id"], str) and len(approval["artifact_hash"]) == 64
    assert body["status"] == "executed"
    return body


# -- streamable HTTP -----------------------------------------------------------------------------


def pending_request_ids(deployment: Deployment) -> set[str]:
    listed = httpx.get(deployment.http.base_url + "/approvals").json()["approval_requests"]
    return {item["request_id"] for item in listed}


@pytest.mark.anyio
@pytest.mark.parametrize("era", ["legacy", "auto"])
async def test_propose_approve_execute_over_streamable_http_with_the_governance_cli(
    deployment: Deployment, era: str
) -> None:
    nonce, label = fresh_nonce(), f"wire-transfer-{uuid.uuid4().hex[:6]}"
    before = deployment.executions()
    async with Client(deployment.http.mcp_url, mode=era) as client:
        # Propose: the server refuses and records the exact call for an approver.
        proposed = envelope_of(await client.call_tool("count", {"label": label, "nonce": nonce}))
        assert (proposed["status"], proposed["error"]["code"]) == ("denied", "approval_required")
        request = proposed["approval_request"]
        assert request["action_hash"] == verifier.action_hash("count", {"label": label}, nonce)
        assert deployment.executions() == before

        # Approve: the approver lists the inbox, sees the exact call, signs and submits.
        if era == "auto":  # one listing through the CLI is enough; it costs a process start
            listing = approvals_list(deployment)
            assert request["request_id"] in listing and label in listing and nonce in listing
        approved = approve(deployment, request["request_id"])
        assert label in approved.stderr and nonce in approved.stderr and request["action_hash"] in approved.stderr

        # Execute: the same call, same nonce, now runs once.
        done = envelope_of(await client.call_tool("count", {"label": label, "nonce": nonce}))
        body = check_executed_with_signed_approval(deployment, done)
        assert body["action_hash"] == request["action_hash"]
        assert deployment.executions() == before + 1
        assert request["request_id"] not in pending_request_ids(deployment)

        again = envelope_of(await client.call_tool("count", {"label": label, "nonce": nonce}))
        assert again["status"] == "replayed"
        assert deployment.executions() == before + 1


# -- stdio -----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_propose_approve_execute_over_stdio_through_the_shared_inbox(
    deployment: Deployment, stdio_client: Client
) -> None:
    nonce = fresh_nonce()
    before = deployment.executions()
    proposed = envelope_of(await stdio_client.call_tool("count", {"label": "stdio-inbox", "nonce": nonce}))
    assert (proposed["status"], proposed["error"]["code"]) == ("denied", "approval_required")
    request = proposed["approval_request"]
    # The stdio server's inbox is the state directory's database, which the HTTP server serves.
    assert request["request_id"] in pending_request_ids(deployment)
    approve(deployment, request["request_id"])
    done = envelope_of(await stdio_client.call_tool("count", {"label": "stdio-inbox", "nonce": nonce}))
    body = check_executed_with_signed_approval(deployment, done)
    assert body["tenant_id"] == "default"
    assert deployment.executions() == before + 1


@pytest.mark.anyio
async def test_propose_approve_execute_over_stdio_with_the_artifact_in_meta(
    deployment: Deployment, stdio_client: Client, tmp_path: Path
) -> None:
    nonce = fresh_nonce()
    before = deployment.executions()
    proposed = envelope_of(await stdio_client.call_tool("count", {"label": "stdio-meta", "nonce": nonce}))
    action_hash = proposed["approval_request"]["action_hash"]
    # The approver mints the artifact offline, for a hash the agent hands over.
    artifact_file = tmp_path / "approval.json"
    minted = run_cli(
        "approve",
        "--action-hash",
        action_hash,
        "--tenant",
        "default",
        "--key",
        str(deployment.gov.private_key),
        "--yes",
        "--no-submit",
        "--out",
        str(artifact_file),
        env=deployment.env,
    )
    assert minted.returncode == 0, minted.stderr
    artifact = json.loads(artifact_file.read_text())
    assert artifact["action_hash"] == action_hash and "audience" not in artifact
    done = envelope_of(
        await stdio_client.call_tool("count", {"label": "stdio-meta", "nonce": nonce}, meta={APPROVAL_META: artifact})
    )
    body = check_executed_with_signed_approval(deployment, done)
    assert body["approval"]["approval_id"] == artifact["approval_id"]
    assert deployment.executions() == before + 1

    # The same artifact cannot run a second call.
    reused = envelope_of(
        await stdio_client.call_tool(
            "count", {"label": "stdio-meta", "nonce": fresh_nonce()}, meta={APPROVAL_META: artifact}
        )
    )
    assert (reused["status"], reused["error"]["code"]) == ("denied", "approval_action_mismatch")
    assert deployment.executions() == before + 1

    # An auditor checks the receipt offline with the published key (stdio and HTTP share it).
    keys_file, envelope_file = tmp_path / "keys.json", tmp_path / "envelope.json"
    keys_file.write_text(json.dumps(deployment.keys))
    envelope_file.write_text(json.dumps(done))
    verified = run_cli("receipt", "verify", str(envelope_file), "--public-key", str(keys_file), env=deployment.env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("OK ") and f"exec_id={done['exec_id']}" in verified.stdout


# -- start-up -------------------------------------------------------------------------------------


def test_clawshield_server_does_not_warn_about_demo_mode(deployment: Deployment) -> None:
    health = httpx.get(deployment.http.base_url + "/health").json()
    assert (health["mode"], health["signature_verification"], health["warnings"]) == ("clawshield", "on", [])
    assert "DEMO MODE" not in deployment.http.log.read_text()


# -- a doctored server (issue 9: approve signed the served hash, not the shown call) ---------------


@dataclass
class Doctored:
    """A fake openexec-mcp on 127.0.0.1 that serves one approval request of its choosing."""

    base_url: str
    item: dict[str, Any]
    posted: list[dict[str, Any]]


@contextmanager
def doctored_server(item: dict[str, Any], server_id: str = "prod-exec") -> Iterator[Doctored]:
    posted: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _json(self, status: int, document: Any) -> None:
            data = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._json(200, {"status": "ok", "server_id": server_id})
            elif self.path.startswith("/approvals?") or self.path == "/approvals":
                self._json(200, {"approval_requests": [item], "next_cursor": None})
            elif self.path == f"/approvals/{item['request_id']}":
                self._json(200, item)
            else:
                self._json(404, {"error": "not found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            posted.append(json.loads(self.rfile.read(length)))
            self._json(201, {"approval_id": posted[-1].get("approval_id")})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Doctored(f"http://127.0.0.1:{server.server_address[1]}", item, posted)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def request_item(action_request: dict[str, Any], action_hash: str, tenant_id: str = "acme") -> dict[str, Any]:
    return {
        "request_id": "req-" + uuid.uuid4().hex[:12],
        "tenant_id": tenant_id,
        "action_hash": action_hash,
        "action_request": action_request,
        "created_at": "2026-11-21T10:00:00.000Z",
        "expires_at": "2099-11-21T10:15:00.000Z",
    }


def approve_against(server: Doctored, governance: Governance, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OPENEXEC_", "CLAWSHIELD_"))}
    return run_cli(
        "approve",
        server.item["request_id"],
        "--key",
        str(governance.private_key),
        "--server",
        server.base_url,
        "--yes",
        *extra,
        env=env,
    )


SHOWN = {"action": "send_email", "payload": {"to": ["team@example.com"], "subject": "lunch"}, "nonce": "nonce-0001"}
HIDDEN = {
    "action": "send_email",
    "payload": {"to": ["attacker@evil.example"], "subject": "lunch"},
    "nonce": "nonce-0001",
}


def test_approve_refuses_a_doctored_request_whose_served_hash_is_another_calls(governance: Governance) -> None:
    """The server shows one call and serves the hash of another: nothing is signed or submitted."""
    served = verifier.action_hash(HIDDEN["action"], HIDDEN["payload"], HIDDEN["nonce"])
    with doctored_server(request_item(SHOWN, served)) as server:
        refused = approve_against(server, governance)
    assert refused.returncode == 1, refused.stderr
    assert "refusing to sign" in refused.stderr and "is not what would be approved" in refused.stderr
    assert "team@example.com" in refused.stderr  # what was shown
    assert server.posted == []


def test_approve_signs_the_hash_it_recomputed_for_the_requests_tenant_and_the_servers_audience(
    governance: Governance,
) -> None:
    honest = verifier.action_hash(SHOWN["action"], SHOWN["payload"], SHOWN["nonce"])
    with doctored_server(request_item(SHOWN, honest)) as server:
        approved = approve_against(server, governance)
    assert approved.returncode == 0, approved.stderr
    (artifact,) = server.posted
    assert (artifact["action_hash"], artifact["tenant_id"], artifact["audience"]) == (honest, "acme", "prod-exec")


def test_approve_refuses_a_tenant_other_than_the_requests(governance: Governance) -> None:
    honest = verifier.action_hash(SHOWN["action"], SHOWN["payload"], SHOWN["nonce"])
    with doctored_server(request_item(SHOWN, honest, tenant_id="acme")) as server:
        refused = approve_against(server, governance, "--tenant", "globex")
    assert refused.returncode == 1 and "not --tenant 'globex'" in refused.stderr
    assert server.posted == []


def test_approve_refuses_a_server_that_is_not_the_audience_named(governance: Governance) -> None:
    honest = verifier.action_hash(SHOWN["action"], SHOWN["payload"], SHOWN["nonce"])
    with doctored_server(request_item(SHOWN, honest), server_id="staging-exec") as server:
        refused = approve_against(server, governance, "--audience", "prod-exec")
    assert refused.returncode == 1 and "not --audience 'prod-exec'" in refused.stderr
    assert server.posted == []


def test_approve_refuses_an_action_request_with_extra_members(governance: Governance) -> None:
    doctored = {**SHOWN, "note": "ignore me"}
    honest = verifier.action_hash(SHOWN["action"], SHOWN["payload"], SHOWN["nonce"])
    with doctored_server(request_item(doctored, honest)) as server:
        refused = approve_against(server, governance)
    assert refused.returncode == 1 and "{action, payload, nonce}" in refused.stderr
    assert server.posted == []


def test_approve_shows_every_member_and_escapes_bidi_overrides(governance: Governance) -> None:
    """A padded body cannot push ``to`` out of view, and U+202E cannot reorder what is shown."""
    payload = {"body": "x" * 5000, "to": ["moc.live@rekcatta\u202e@example.com"]}
    shown = {"action": "send_email", "payload": payload, "nonce": "nonce-0002"}
    honest = verifier.action_hash("send_email", payload, "nonce-0002")
    with doctored_server(request_item(shown, honest)) as server:
        approved = approve_against(server, governance)
    assert approved.returncode == 0, approved.stderr
    assert "x" * 5000 in approved.stderr  # the approver's CLI never elides
    assert 'to[0]: "moc.live@rekcatta\\u202e@example.com"' in approved.stderr
    assert "\u202e" not in approved.stderr
