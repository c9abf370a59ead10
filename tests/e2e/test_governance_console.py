"""The governance console in a real browser (SPEC §13; issue 14).

Real components only: an execution server process in clawshield mode trusting the governance
public key, ``openexec-mcp governance serve`` holding the private key, Debian's Chromium driven
by Playwright, an agent calling over streamable HTTP MCP. A person signs in, opens the request
the agent just caused, decides, and the agent's retry shows the outcome.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import server_env
from mcp import Client
from oe_testing.approvals import GOV_PUBLIC_B64, write_private_key
from oe_testing.governance import (
    APPROVER_TOKEN,
    CHROMIUM_ARGS,
    GovernanceProcess,
    governance_config,
    governance_server,
    require_chromium,
)
from oe_testing.http_server import HttpServer, running_http_server
from oe_testing.receipts import envelope_of

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def chromium() -> str:
    return require_chromium()


@pytest.fixture
def execution(tmp_path: Path, counter_file: Path) -> Iterator[HttpServer]:
    env = server_env(
        tmp_path / "state",
        CLAWSHIELD_PUBLIC_KEY=GOV_PUBLIC_B64,
        OPENEXEC_MODE="clawshield",
        OPENEXEC_LIMITS__MAX_PAYLOAD_BYTES="262144",
    )  # room for the 100 KB hostile value
    with running_http_server(env, tmp_path) as http:
        yield http


@pytest.fixture
def console(tmp_path: Path, execution: HttpServer) -> Iterator[GovernanceProcess]:
    key = write_private_key(tmp_path / "governance.key")
    with governance_server(tmp_path, key, [execution.base_url], governance_config(tmp_path / "gov.toml")) as gov:
        yield gov


@pytest.fixture
async def page(chromium: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            context = await browser.new_context(viewport={"width": 1200, "height": 1000})
            yield await context.new_page()
        finally:
            await browser.close()


async def sign_in(page: Any, console: GovernanceProcess) -> None:
    await page.goto(console.url + "/")
    assert page.url.endswith("/login")
    await page.fill("#token", APPROVER_TOKEN)
    await page.click("#sign-in")
    await page.wait_for_url(console.url + "/")
    assert "Ada Approver" in await page.inner_text("header")


async def open_request(page: Any, console: GovernanceProcess, request_id: str) -> None:
    await page.goto(console.url + "/")
    await page.click(f'a.open[href$="/{request_id}"]')
    await page.wait_for_selector("#action-request")


async def test_person_approves_in_the_browser_and_the_agents_retry_executes(
    execution: HttpServer, console: GovernanceProcess, page: Any, counter_file: Path
) -> None:
    nonce, label = uuid.uuid4().hex, "pay invoice 4711"
    async with Client(execution.mcp_url) as agent:
        proposed = envelope_of(await agent.call_tool("count", {"label": label, "nonce": nonce}))
        assert proposed["error"]["code"] == "approval_required"
        request = proposed["approval_request"]
        await sign_in(page, console)
        await open_request(page, console, request["request_id"])
        shown = await page.inner_text("#action-request")
        assert label in shown and nonce in shown
        assert await page.inner_text("#recomputed-hash") == request["action_hash"]
        assert await page.inner_text("#hash-status") == "matches"
        assert "signed" in await page.inner_text("#policy")
        shot = await page.screenshot(full_page=True)
        assert shot.startswith(b"\x89PNG")
        if os.environ.get("OPENEXEC_UPDATE_SCREENSHOTS") == "1":  # refresh the README's picture on request only
            (DOCS / "console-request.png").write_bytes(shot)
        await page.click("#approve-once")
        assert "approve" in await page.inner_text("#result")

        done = envelope_of(await agent.call_tool("count", {"label": label, "nonce": nonce}))
        assert (done["status"], done["error"]) == ("executed", None)
    await page.goto(console.url + "/")
    history = await page.inner_text("table.history")
    assert "approve" in history and "Ada Approver" in history


async def test_person_rejects_with_a_reason_and_the_agent_is_told_no(
    execution: HttpServer, console: GovernanceProcess, page: Any, counter_file: Path
) -> None:
    nonce = uuid.uuid4().hex
    async with Client(execution.mcp_url) as agent:
        proposed = envelope_of(await agent.call_tool("count", {"label": "drop table", "nonce": nonce}))
        await sign_in(page, console)
        await open_request(page, console, proposed["approval_request"]["request_id"])
        await page.fill("#reject-reason", "not during the freeze")
        await page.click("#reject")
        assert "reject" in await page.inner_text("#result")
        retry = envelope_of(await agent.call_tool("count", {"label": "drop table", "nonce": nonce}))
        assert (retry["status"], retry["error"]["code"]) == ("denied", "approval_rejected")
        assert "not during the freeze" in retry["error"]["message"]
    assert not counter_file.exists()


async def test_person_grants_and_two_calls_run_without_prompts_then_revokes_the_grant(
    execution: HttpServer, console: GovernanceProcess, page: Any, counter_file: Path
) -> None:
    async with Client(execution.mcp_url) as agent:
        proposed = envelope_of(await agent.call_tool("count", {"label": "ok-0", "nonce": uuid.uuid4().hex}))
        await sign_in(page, console)
        await open_request(page, console, proposed["approval_request"]["request_id"])
        await page.fill("#grant-uses", "3")
        await page.fill("#grant-hours", "1")
        await page.fill("#grant-when", 'args.label.startsWith("ok")')
        await page.click("#approve-grant")
        assert "grant" in await page.inner_text("#result")
        for label in ("ok-1", "ok-2"):
            answer = envelope_of(await agent.call_tool("count", {"label": label, "nonce": uuid.uuid4().hex}))
            assert answer["status"] == "executed", answer["error"]
        outside = envelope_of(await agent.call_tool("count", {"label": "rm -rf", "nonce": uuid.uuid4().hex}))
        assert outside["error"]["code"] == "approval_required"  # the constraint holds
        await page.goto(console.url + "/")
        await page.click("button.revoke")
        assert "revoke" in await page.inner_text("#result")
        third = envelope_of(await agent.call_tool("count", {"label": "ok-3", "nonce": uuid.uuid4().hex}))
        assert third["error"]["code"] == "approval_grant_revoked"
    assert counter_file.read_text().split() == ["ok-1", "ok-2"]


async def test_hostile_payload_renders_inert_and_complete(
    execution: HttpServer, console: GovernanceProcess, page: Any
) -> None:
    big = "A" * 100_000 + "END"
    label = '<script>document.title="pwned"</script>\u202etxt.exe'
    nonce = uuid.uuid4().hex
    async with Client(execution.mcp_url) as agent:
        proposed = envelope_of(await agent.call_tool("count", {"label": label + big, "nonce": nonce}))
    request_id = proposed["approval_request"]["request_id"]
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    await sign_in(page, console)
    await open_request(page, console, request_id)
    shown = await page.inner_text("#action-request")
    assert "<script>" in shown  # shown as text ...
    assert await page.locator("main script").count() == 0  # ... never as an element
    assert await page.title() != "pwned" and dialogs == []
    assert "\u202e" not in shown and "⟦U+202E⟧" in shown  # the override is made visible, not obeyed
    assert big in shown  # nothing truncated: the 100 KB value and what follows it
    assert await page.inner_text("#hash-status") == "matches"


async def test_cross_site_form_post_is_refused(execution: HttpServer, console: GovernanceProcess, page: Any) -> None:
    nonce = uuid.uuid4().hex
    async with Client(execution.mcp_url) as agent:
        proposed = envelope_of(await agent.call_tool("count", {"label": "x", "nonce": nonce}))
    request_id = proposed["approval_request"]["request_id"]
    await sign_in(page, console)
    # An attacker's page on another origin posts the approve form to the console.
    attacker = await _serve_attacker_page(console, request_id)
    try:
        await page.goto(attacker.url)
        await page.wait_for_load_state()
        await page.click("#go")
        await page.wait_for_load_state()
        body = await page.content()
        assert "cross-site request refused" in body and "Decision recorded" not in body
    finally:
        attacker.close()
    # Nothing was signed: the request is still pending, and a direct POST without token is refused too.
    listed = httpx.get(execution.base_url + "/approvals").json()["approval_requests"]
    assert request_id in {item["request_id"] for item in listed}
    forged = httpx.post(
        f"{console.url}/requests/s0/{request_id}/decide",
        data={"decision": "approve"},
        headers={"Origin": "http://evil.example"},
    )
    assert forged.status_code == 403
    no_token = httpx.post(f"{console.url}/requests/s0/{request_id}/decide", data={"decision": "approve"})
    assert no_token.status_code == 403


class _Attacker:
    def __init__(self, url: str, server: Any, thread: Any) -> None:
        self.url, self._server, self._thread = url, server, thread

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()


async def _serve_attacker_page(console: GovernanceProcess, request_id: str) -> _Attacker:
    import http.server
    import threading

    html = (
        f'<html><body><form method="post" action="{console.url}/requests/s0/{request_id}/decide">'
        '<input type="hidden" name="decision" value="approve"><button id="go">win a prize</button></form></body></html>'
    ).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(html)))
            self.end_headers()
            self.wfile.write(html)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return _Attacker(f"http://127.0.0.2:{server.server_address[1]}/", server, thread)
