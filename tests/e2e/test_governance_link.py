"""The seed's CLAWSHIELD_BASE_URL / CLAWSHIELD_API_KEY link and notifications (SPEC §13; issue 14).

Real processes and servers on loopback: an execution server whose only wiring is the two seed
variables, ``openexec-mcp governance serve`` (no ``--server``: it only knows what is pushed to
it), a webhook receiver (``http.server``) and an SMTP server (``aiosmtpd``). The request travels
server → governance (push), a person approves over the console's HTML forms, the decision
travels governance → server (poll), and the agent's retry executes.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from conftest import server_env
from oe_testing.approvals import GOV_PUBLIC_B64, write_private_key
from oe_testing.governance import APPROVER_TOKEN, GovernanceProcess, governance_config, governance_server
from oe_testing.http_server import HttpServer, free_port, running_http_server

pytestmark = pytest.mark.slow

API_KEY = "seed-api-key-for-tests-0123456789abcdef"
WAIT_SECONDS = 60.0


def wait_for(predicate: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)  # bounded polling for a background effect, never a fixed wait
    raise AssertionError(f"timed out waiting for {what}")


class Webhook:
    """A loopback webhook receiver collecting JSON bodies."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join()
        self.server.server_close()


class Mailbox:
    """aiosmtpd handler keeping every message's text."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content.decode("utf-8", "replace"))
        return "250 OK"


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture
def governance(tmp_path: Path, webhook: Webhook, mailbox: tuple[Mailbox, int]) -> Iterator[GovernanceProcess]:
    notify = (
        f'[[governance.notify]]\nwebhook_url = "{webhook.url}"\n'
        f'[[governance.notify]]\nemail = "ops@example.test"\nsmtp_host = "127.0.0.1"\nsmtp_port = {mailbox[1]}\n'
    )
    config = governance_config(tmp_path / "gov.toml", notify=notify)
    key = write_private_key(tmp_path / "governance.key")
    with governance_server(tmp_path, key, [], config, env={"CLAWSHIELD_API_KEY": API_KEY}, poll_seconds=0.2) as gov:
        yield gov


@pytest.fixture
def execution(tmp_path: Path, counter_file: Path, governance: GovernanceProcess) -> Iterator[HttpServer]:
    env = server_env(
        tmp_path / "state", CLAWSHIELD_PUBLIC_KEY=GOV_PUBLIC_B64, OPENEXEC_MODE="clawshield",
        CLAWSHIELD_BASE_URL=governance.url, CLAWSHIELD_API_KEY=API_KEY, CLAWSHIELD_POLL_SECONDS="0.2",
    )  # fmt: skip
    with running_http_server(env, tmp_path) as http:
        yield http


@contextmanager
def signed_in(governance: GovernanceProcess) -> Iterator[tuple[httpx.Client, str]]:
    """Sign in over the console's forms; yield the client (session cookie) and the CSRF token."""
    with httpx.Client(base_url=governance.url, headers={"Origin": governance.url}, timeout=30) as client:
        yield client, _sign_in(client)


def _sign_in(client: httpx.Client) -> str:
    page = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    assert client.post("/login", data={"csrf": csrf.group(1), "token": APPROVER_TOKEN}).status_code == 303
    index = client.get("/")
    token = re.search(r'name="csrf" value="([^"]+)"', index.text)
    assert token is not None and "Ada Approver" in index.text
    return token.group(1)


def execute(server: HttpServer, label: str, nonce: str) -> dict[str, Any]:
    body = {"action": "count", "payload": {"label": label}, "nonce": nonce}
    envelope: dict[str, Any] = httpx.post(server.base_url + "/execute", json=body, timeout=60).json()
    return envelope


def test_pushed_request_is_notified_approved_in_the_console_and_polled_back_so_the_retry_executes(
    execution: HttpServer, governance: GovernanceProcess, webhook: Webhook, mailbox: tuple[Mailbox, int],
    counter_file: Path,
) -> None:  # fmt: skip
    nonce = uuid.uuid4().hex
    proposed = execute(execution, "ship release 2.0", nonce)
    assert proposed["error"]["code"] == "approval_required"
    request_id = proposed["approval_request"]["request_id"]
    link = f"{governance.url}/requests/push/{request_id}"

    # Notifications: Slack-compatible webhook {"text", "request"} and an email, each with the link.
    hook = wait_for(lambda: [b for b in webhook.bodies if b["request"]["request_id"] == request_id], "the webhook")
    assert set(hook[0]) == {"text", "request"} and link in hook[0]["text"] and hook[0]["request"]["action"] == "count"
    mail = wait_for(lambda: [m for m in mailbox[0].messages if request_id in m], "the email")
    assert link in mail[0] and "ops@example.test" in mail[0]

    with signed_in(governance) as (client, csrf):
        page = client.get(f"/requests/push/{request_id}")
        assert page.status_code == 200 and "ship release 2.0" in page.text and "matches" in page.text
        decided = client.post(f"/requests/push/{request_id}/decide", data={"csrf": csrf, "decision": "approve"})
        assert decided.status_code == 200 and "Decision recorded" in decided.text

        done = wait_for(lambda: (e := execute(execution, "ship release 2.0", nonce))["status"] == "executed" and e,
                        "the polled approval")  # fmt: skip
        assert done["error"] is None
        assert counter_file.read_text().splitlines() == ["ship release 2.0"]
        # The request left the console's pending list, and the decision is in the history.
        index = client.get("/").text
        assert f"/requests/push/{request_id}" not in index and "approve" in index


def test_pushed_request_whose_hash_does_not_match_is_never_signed(governance: GovernanceProcess) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    forged = {
        "request_id": "forged-1", "tenant_id": "default", "action_hash": "0" * 64,
        "action_request": {"action": "count", "payload": {"label": "harmless"}, "nonce": "n-1"},
        "created_at": "2026-01-01T00:00:00Z", "expires_at": "2999-01-01T00:00:00Z",
    }  # fmt: skip
    assert httpx.post(governance.url + "/v1/approval-requests", json=forged).status_code == 401  # no API key
    assert httpx.post(governance.url + "/v1/approval-requests", json=forged, headers=auth).status_code == 201
    with signed_in(governance) as (client, csrf):
        page = client.get("/requests/push/forged-1")
        assert "MISMATCH" in page.text and 'id="approve-once"' not in page.text
        refused = client.post("/requests/push/forged-1/decide", data={"csrf": csrf, "decision": "approve"})
        assert refused.status_code == 409 and "refusing to sign" in refused.text
    decisions = httpx.get(governance.url + "/v1/decisions", params={"since": "0"}, headers=auth).json()
    assert decisions["decisions"] == []


def test_security_headers_and_cookie_flags(governance: GovernanceProcess) -> None:
    page = httpx.get(governance.url + "/login")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "'unsafe-inline'" not in csp
    assert page.headers["x-frame-options"] == "DENY"
    cookie = page.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert "<script" not in page.text.lower()


def test_history_and_seed_decisions_survive_a_restart_with_a_state_dir(tmp_path: Path) -> None:
    config = governance_config(tmp_path / "gov.toml")
    key = write_private_key(tmp_path / "governance.key")
    auth = {"Authorization": f"Bearer {API_KEY}"}
    from openexec_mcp.core.action import compute_action_hash

    request = {"action": "count", "payload": {"label": "a"}, "nonce": "n-restart"}
    pushed = {
        "request_id": "r-restart", "tenant_id": "default", "action_request": request,
        "action_hash": compute_action_hash("count", {"label": "a"}, "n-restart"),
        "created_at": "2026-01-01T00:00:00Z", "expires_at": "2999-01-01T00:00:00Z",
    }  # fmt: skip
    options = {"env": {"CLAWSHIELD_API_KEY": API_KEY}, "extra_args": ("--state-dir", str(tmp_path / "gov-state"))}
    with governance_server(tmp_path, key, [], config, **options) as gov:  # pyright: ignore[reportArgumentType]
        assert httpx.post(gov.url + "/v1/approval-requests", json=pushed, headers=auth).status_code == 201
        with signed_in(gov) as (client, csrf):
            client.post("/requests/push/r-restart/decide", data={"csrf": csrf, "decision": "reject", "reason": "no"})
        before = httpx.get(gov.url + "/v1/decisions", params={"since": "0"}, headers=auth).json()["decisions"]
    assert len(before) == 1 and before[0]["artifact"]["decision"] == "reject"
    with governance_server(tmp_path, key, [], config, **options) as gov:  # pyright: ignore[reportArgumentType]
        after = httpx.get(gov.url + "/v1/decisions", params={"since": "0"}, headers=auth).json()["decisions"]
        assert after == before  # a server polling from 0 still gets it; one past its cursor gets nothing new
        assert httpx.get(gov.url + "/v1/decisions", params={"since": str(before[0]["cursor"])},
                         headers=auth).json()["decisions"] == []  # fmt: skip
        with signed_in(gov) as (client, _):
            index = client.get("/").text
            assert "r-restart" not in index.split("History")[0] and "reject" in index.split("History")[1]
