"""The ``elicit`` approval policy through real SDK clients, in both protocol eras (SPEC §5 source 4).

2025-11-25 (``mode="legacy"``): the server sends a form ``elicitation/create`` in the middle of
the call. 2026-07-28 (``mode="auto"``): the first round answers ``input_required`` and the client
retries the same call with the answer; that retry is a continuation, not a replay. In-memory
``Client(mcp_server)`` is a real SDK client; the last tests use a real ``serve --transport http``
process. Executions are counted on disk by the ``count`` action.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from conftest import server_env
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp_types import ElicitRequestFormParams, ElicitResult, InputRequiredResult, InputResponses
from oe_testing.actions import executions
from oe_testing.approvals import approvals_config, mint
from oe_testing.http_server import HttpServer, running_http_server
from oe_testing.nonces import fresh_nonce
from oe_testing.receipts import body_of, envelope_of

from openexec_mcp.core.action import compute_action_hash
from openexec_mcp.core.clock import utc_now
from openexec_mcp.gate.pipeline import CallContext
from openexec_mcp.runtime import Runtime
from openexec_mcp.transport.mcp import APPROVAL_META, ELICITATION_KEY, build_mcp_server

ERAS = ["legacy", "auto"]
ERA_VERSION = {"legacy": "2025-11-25", "auto": "2026-07-28"}
NO_APPROVAL = {"method": "elicitation", "approval_id": None, "kid": None, "issued_by": None, "artifact_hash": None}


class User:
    """An elicitation callback that answers as told and records what it was asked."""

    def __init__(
        self,
        action: Literal["accept", "decline", "cancel"] = "accept",
        content: dict[str, Any] | None = None,
        counter: Path | None = None,
    ):
        self.action: Literal["accept", "decline", "cancel"] = action
        self.content: dict[str, Any] | None = {"approve": True} if content is None and action == "accept" else content
        self.counter = counter
        self.asked: list[Any] = []
        self.executions_when_asked: list[int] = []

    async def __call__(self, context: Any, params: Any) -> ElicitResult:
        self.asked.append(params)
        if self.counter is not None:
            self.executions_when_asked.append(executions(self.counter))
        return ElicitResult(action=self.action, content=self.content)


@pytest.fixture
def eliciting(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime(approvals=approvals_config(), policy={"actions": {"count": {"approval": "elicit"}}})


@pytest.fixture
def mcp_server(eliciting: Runtime) -> MCPServer[Any]:
    return build_mcp_server(eliciting.gate, tenant_for=lambda _ctx: "default")


# -- in memory, both eras ---------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
async def test_accept_executes_once_with_a_client_attested_approval(
    mcp_server: MCPServer[Any], counter_file: Path, era: str
) -> None:
    user = User("accept", counter=counter_file)
    async with Client(mcp_server, mode=era, elicitation_callback=user) as client:
        assert client.protocol_version == ERA_VERSION[era]
        result = await client.call_tool("count", {"label": "approve-me", "nonce": "nonce-0001"})
    envelope = envelope_of(result)
    assert (envelope["status"], envelope["error"], result.is_error) == ("executed", None, False)
    assert envelope["result"] == {"executions": 1}
    assert executions(counter_file) == 1
    approval = body_of(envelope)["approval"]
    assert approval["method"] == "elicitation"
    assert (approval["approval_id"], approval["kid"], approval["issued_by"]) == (None, None, None)
    assert isinstance(approval["artifact_hash"], str) and len(approval["artifact_hash"]) == 64
    # The user saw this exact call, and was asked before anything ran.
    (asked,) = user.asked
    assert isinstance(asked, ElicitRequestFormParams)
    assert "count" in asked.message and "approve-me" in asked.message and "nonce-0001" in asked.message
    assert asked.requested_schema["properties"]["approve"]["type"] == "boolean"
    assert user.executions_when_asked == [0]


@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("answer", ["decline", "cancel"])
async def test_decline_or_cancel_is_approval_declined_and_the_handler_never_runs(
    mcp_server: MCPServer[Any],
    eliciting: Runtime,
    counter_file: Path,
    era: str,
    answer: Literal["decline", "cancel"],
) -> None:
    async with Client(mcp_server, mode=era, elicitation_callback=User(answer)) as client:
        result = await client.call_tool("count", {"nonce": "nonce-0001"})
    envelope = envelope_of(result)
    assert (envelope["status"], envelope["error"]["code"], result.is_error) == ("denied", "approval_declined", True)
    assert envelope["approval_request"] is None
    assert body_of(envelope)["approval"] == NO_APPROVAL
    assert executions(counter_file) == 0
    assert eliciting.store.get_nonce("default", "nonce-0001") is None
    # Nothing was consumed: asking again on the same nonce, the user may still accept.
    async with Client(mcp_server, mode=era, elicitation_callback=User("accept")) as client:
        again = envelope_of(await client.call_tool("count", {"nonce": "nonce-0001"}))
    assert again["status"] == "executed"
    assert executions(counter_file) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("content", [{"approve": False}, {}], ids=["approve-false", "no-approve-field"])
async def test_accept_without_approve_true_is_declined(
    mcp_server: MCPServer[Any], counter_file: Path, era: str, content: dict[str, Any]
) -> None:
    async with Client(mcp_server, mode=era, elicitation_callback=User("accept", content)) as client:
        envelope = envelope_of(await client.call_tool("count", {"nonce": "nonce-0001"}))
    assert (envelope["status"], envelope["error"]["code"]) == ("denied", "approval_declined")
    assert executions(counter_file) == 0


@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
async def test_client_without_elicitation_gets_approval_required_with_an_inbox_request(
    mcp_server: MCPServer[Any], eliciting: Runtime, counter_file: Path, era: str
) -> None:
    async with Client(mcp_server, mode=era) as client:
        envelope = envelope_of(await client.call_tool("count", {"label": "a", "nonce": "nonce-0001"}))
    assert (envelope["status"], envelope["error"]["code"]) == ("denied", "approval_required")
    request = envelope["approval_request"]
    assert request["action_hash"] == compute_action_hash("count", {"label": "a"}, "nonce-0001")
    assert [r.request_id for r in eliciting.store.list_approval_requests(utc_now().timestamp())] == [
        request["request_id"]
    ]
    assert executions(counter_file) == 0


@pytest.mark.anyio
async def test_call_without_an_elicitation_channel_gets_approval_required(
    eliciting: Runtime, counter_file: Path
) -> None:
    # POST /execute has no way to ask the user: the gate gets no elicitor.
    answer = await eliciting.gate.call("count", {"nonce": "nonce-0001"}, CallContext(tenant_id="default", run_id="r"))
    assert (answer.status, answer.envelope["error"]["code"]) == ("denied", "approval_required")
    assert answer.envelope["approval_request"] is not None
    assert executions(counter_file) == 0


@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
async def test_signed_artifact_in_meta_approves_an_elicit_action_without_asking(
    mcp_server: MCPServer[Any], counter_file: Path, era: str
) -> None:
    user = User("decline")
    artifact = mint(compute_action_hash("count", {}, "nonce-0001"))
    async with Client(mcp_server, mode=era, elicitation_callback=user) as client:
        result = await client.call_tool("count", {"nonce": "nonce-0001"}, meta={APPROVAL_META: artifact})
    envelope = envelope_of(result)
    assert envelope["status"] == "executed"
    assert body_of(envelope)["approval"]["method"] == "signed"
    assert user.asked == []
    assert executions(counter_file) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
async def test_replay_of_an_accepted_call_does_not_ask_again_or_run_again(
    mcp_server: MCPServer[Any], counter_file: Path, era: str
) -> None:
    user = User("accept")
    async with Client(mcp_server, mode=era, elicitation_callback=user) as client:
        first = envelope_of(await client.call_tool("count", {"nonce": "nonce-0001"}))
        again = envelope_of(await client.call_tool("count", {"nonce": "nonce-0001"}))
    assert (first["status"], again["status"]) == ("executed", "replayed")
    assert again["result"] == first["result"]
    assert body_of(again)["approval"]["method"] == "elicitation"
    assert len(user.asked) == 1
    assert executions(counter_file) == 1


# -- 2026-07-28: input_required, driven by hand -------------------------------------------------------


@pytest.mark.anyio
async def test_input_required_round_records_nothing_and_its_retry_executes_exactly_once(
    mcp_server: MCPServer[Any], eliciting: Runtime, counter_file: Path
) -> None:
    yes: InputResponses = {ELICITATION_KEY: ElicitResult(action="accept", content={"approve": True})}
    async with Client(mcp_server, mode="auto", elicitation_callback=User()) as client:
        first = await client.session.call_tool("count", {"nonce": "nonce-0001"}, allow_input_required=True)
        assert isinstance(first, InputRequiredResult)
        assert set(first.input_requests or {}) == {ELICITATION_KEY}
        assert executions(counter_file) == 0
        assert eliciting.store.get_nonce("default", "nonce-0001") is None
        assert eliciting.store.ledger_size() == 0
        # The retry carries the same arguments and _meta: a continuation, not a replay.
        retry = await client.session.call_tool(
            "count", {"nonce": "nonce-0001"}, input_responses=yes, request_state=first.request_state
        )
        assert (envelope_of(retry)["status"], executions(counter_file)) == ("executed", 1)
        # Sending that continuation again is now a replay of the finished call, not a second run.
        again = await client.session.call_tool(
            "count", {"nonce": "nonce-0001"}, input_responses=yes, request_state=first.request_state
        )
        assert envelope_of(again)["status"] == "replayed"
        assert body_of(envelope_of(again))["original_exec_id"] == envelope_of(retry)["exec_id"]
    assert executions(counter_file) == 1


@pytest.mark.anyio
async def test_answer_sent_without_the_servers_request_state_is_not_an_approval(
    mcp_server: MCPServer[Any], counter_file: Path
) -> None:
    yes: InputResponses = {ELICITATION_KEY: ElicitResult(action="accept", content={"approve": True})}
    async with Client(mcp_server, mode="auto", elicitation_callback=User()) as client:
        forged = await client.session.call_tool("count", {"nonce": "nonce-0001"}, input_responses=yes)
    envelope = envelope_of(forged)
    assert (envelope["status"], envelope["error"]["code"]) == ("denied", "approval_declined")
    assert executions(counter_file) == 0


@pytest.mark.anyio
async def test_request_state_of_one_call_cannot_approve_another(mcp_server: MCPServer[Any], counter_file: Path) -> None:
    yes: InputResponses = {ELICITATION_KEY: ElicitResult(action="accept", content={"approve": True})}
    async with Client(mcp_server, mode="auto", elicitation_callback=User()) as client:
        first = await client.session.call_tool(
            "count", {"label": "a", "nonce": "nonce-0001"}, allow_input_required=True
        )
        assert isinstance(first, InputRequiredResult)
        with pytest.raises(Exception, match="requestState"):
            await client.session.call_tool(
                "count", {"label": "b", "nonce": "nonce-0002"}, input_responses=yes, request_state=first.request_state
            )
    assert executions(counter_file) == 0


# -- over real streamable HTTP ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def elicit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    root = tmp_path_factory.mktemp("elicit-http")
    config = root / "openexec.toml"
    config.write_text('[policy.actions.count]\napproval = "elicit"\n')
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENEXEC_TEST_COUNTER", str(root / "executions.txt"))
        env = server_env(root / "state", OPENEXEC_CONFIG=str(config))
    with running_http_server(env, root) as server:
        yield server


@pytest.fixture
async def http_counter(elicit_server: HttpServer) -> AsyncIterator[Callable[[], int]]:
    """Executions on the shared server since this test started."""
    before = executions(elicit_server.counter)
    yield lambda: executions(elicit_server.counter) - before


@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
async def test_accept_over_streamable_http_executes_once(
    elicit_server: HttpServer, http_counter: Callable[[], int], era: str
) -> None:
    user = User("accept")
    async with Client(elicit_server.mcp_url, mode=era, elicitation_callback=user) as client:
        assert client.protocol_version == ERA_VERSION[era]
        envelope = envelope_of(await client.call_tool("count", {"label": era, "nonce": fresh_nonce()}))
    assert envelope["status"] == "executed"
    assert body_of(envelope)["approval"]["method"] == "elicitation"
    assert len(user.asked) == 1
    assert http_counter() == 1


@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
async def test_decline_over_streamable_http_is_declined(
    elicit_server: HttpServer, http_counter: Callable[[], int], era: str
) -> None:
    async with Client(elicit_server.mcp_url, mode=era, elicitation_callback=User("decline")) as client:
        envelope = envelope_of(await client.call_tool("count", {"nonce": fresh_nonce()}))
    assert (envelope["status"], envelope["error"]["code"]) == ("denied", "approval_declined")
    assert http_counter() == 0


@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
async def test_client_without_elicitation_over_streamable_http_gets_approval_required(
    elicit_server: HttpServer, http_counter: Callable[[], int], era: str
) -> None:
    async with Client(elicit_server.mcp_url, mode=era) as client:
        envelope = envelope_of(await client.call_tool("count", {"nonce": fresh_nonce()}))
    assert (envelope["status"], envelope["error"]["code"]) == ("denied", "approval_required")
    assert envelope["approval_request"] is not None
    assert http_counter() == 0


# -- what the person is shown (issue 9: a padded body hid ``to``; bidi overrides passed through) ----


@pytest.fixture
def eliciting_echo(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime(policy={"actions": {"echo": {"approval": "elicit"}}})


@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
async def test_padded_body_cannot_hide_the_recipient_from_the_elicitation_prompt(
    eliciting_echo: Runtime, era: str
) -> None:
    """Sorted keys put ``body`` before ``to``; 5,000 characters of padding once pushed ``to`` out."""
    user = User("decline")
    server = build_mcp_server(eliciting_echo.gate, tenant_for=lambda _ctx: "default")
    payload = {"body": "Hello team, " + "x" * 5000, "to": "attacker@evil.example", "nonce": "nonce-0001"}
    async with Client(server, mode=era, elicitation_callback=user) as client:
        envelope = envelope_of(await client.call_tool("echo", payload))
    assert (envelope["status"], envelope["error"]["code"]) == ("denied", "approval_declined")
    (asked,) = user.asked
    assert 'to: "attacker@evil.example"' in asked.message
    # The long value is elided visibly, saying how much, outside the quotes where no value can forge it.
    assert "characters elided)..." in asked.message and "x" * 1000 not in asked.message
    assert "Hello team, " in asked.message
    action_hash = compute_action_hash("echo", {k: v for k, v in payload.items() if k != "nonce"}, "nonce-0001")
    assert action_hash in asked.message  # the whole hash, not a prefix


@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
async def test_bidi_overrides_and_controls_are_shown_escaped_in_the_elicitation_prompt(
    eliciting_echo: Runtime, era: str
) -> None:
    user = User("decline")
    server = build_mcp_server(eliciting_echo.gate, tenant_for=lambda _ctx: "default")
    sneaky = "moc.live@rekcatta\u202e\u2066@example.com\u200f\x1b[2K\x85"
    async with Client(server, mode=era, elicitation_callback=user) as client:
        await client.call_tool("echo", {"to": sneaky, "n\u202ete": 1, "nonce": "nonce-0001"})
    (asked,) = user.asked
    for hidden in ("\u202e", "\u2066", "\u200f", "\x1b", "\x85"):
        assert hidden not in asked.message
    assert '"moc.live@rekcatta\\u202e\\u2066@example.com\\u200f\\u001b[2K\\u0085"' in asked.message
    assert '"n\\u202ete": 1' in asked.message


@pytest.mark.anyio
async def test_payload_too_large_to_show_is_not_elicited_but_approval_required(
    eliciting_echo: Runtime, counter_file: Path
) -> None:
    """Hundreds of members cannot all fit a prompt: the user is not asked about a part of the call."""
    user = User("accept")
    server = build_mcp_server(eliciting_echo.gate, tenant_for=lambda _ctx: "default")
    payload: dict[str, Any] = {f"field_{index:03d}": "y" * 50 for index in range(300)}
    async with Client(server, mode="legacy", elicitation_callback=user) as client:
        envelope = envelope_of(await client.call_tool("echo", {**payload, "nonce": "nonce-0001"}))
    assert (envelope["status"], envelope["error"]["code"]) == ("denied", "approval_required")
    assert envelope["approval_request"] is not None  # an approver can still sign it
    assert envelope["result"] is None and user.asked == []
    assert eliciting_echo.store.get_nonce("default", "nonce-0001") is None
    assert body_of(envelope)["error_code"] == "approval_required"
