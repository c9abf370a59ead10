"""An upstream's question to a 2026-07-28 caller is an ``input_required`` round (SPEC §11).

A real ``openexec-mcp serve`` (stdio, and HTTP) guards the Python fixture upstream, itself a real
stdio subprocess; a real ``mcp.Client`` calls it. The upstream counts its executions on disk, so
"ran exactly once" is measured where the side effect happens.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from conftest import server_env
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError
from oe_testing import verifier
from oe_testing.http_server import running_http_server
from oe_testing.upstream_server import executions
from oe_testing.upstreams import server_args

from openexec_mcp.transport.continuations import INPUT_KEY

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300), pytest.mark.slow]


def fresh_nonce() -> str:
    return "n-" + uuid.uuid4().hex


def envelope_of(result: types.CallToolResult) -> dict[str, Any]:
    assert isinstance(result.structured_content, dict)
    return result.structured_content


def write_config(
    root: Path, counter_dir: Path, *, call_timeout_seconds: int = 30, request_state_ttl_seconds: int = 600
) -> Path:
    config = root / "config.toml"
    args = ", ".join(json.dumps(arg) for arg in server_args(counter_dir))
    config.write_text(
        f"""mode = "demo"

[mcp]
request_state_ttl_seconds = {request_state_ttl_seconds}

[[upstreams]]
name = "t"
command = {json.dumps(sys.executable)}
args = [{args}]
env = {{ PYTHONPATH = {json.dumps(str(Path(__file__).resolve().parents[1]))} }}
call_timeout_seconds = {call_timeout_seconds}
"""
    )
    return config


def published_keys(root: Path, config: Path) -> dict[str, Any]:
    env = server_env(root / "state", OPENEXEC_CONFIG=str(config))
    keys = subprocess.run(
        [sys.executable, "-m", "openexec_mcp", "keys", "public"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    document: dict[str, Any] = json.loads(keys.stdout)
    return document


@asynccontextmanager
async def serving(
    root: Path, config: Path, transport: str, *, mode: str = "auto", **client: Any
) -> AsyncIterator[Client]:
    """A real client connected to a real ``serve`` over ``transport`` (``stdio`` or ``http``)."""
    env = server_env(root / "state", OPENEXEC_CONFIG=str(config))
    if transport == "stdio":
        params = StdioServerParameters(command=sys.executable, args=["-m", "openexec_mcp", "serve"], env=env)
        async with Client(params, mode=mode, **client) as connected:
            yield connected
        return
    with running_http_server(env, root) as http:
        async with Client(http.mcp_url, mode=mode, **client) as connected:
            yield connected


class Answers:
    """An elicitation callback that answers ``{"answer": <answer>}`` and remembers what it was asked."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.asked: list[types.ElicitRequestParams] = []

    async def __call__(self, context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.asked.append(params)
        return types.ElicitResult(action="accept", content={"answer": self.answer})


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_a_2026_caller_answers_the_upstream_elicitation_and_the_upstream_runs_once(
    tmp_path: Path, transport: str
) -> None:
    counter_dir = tmp_path / "upstream"
    config = write_config(tmp_path, counter_dir)
    answers = Answers("yes")
    nonce = fresh_nonce()
    async with serving(tmp_path, config, transport, elicitation_callback=answers) as client:
        assert client.protocol_version == "2026-07-28"
        steps: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            steps.append(progress)

        result = await client.call_tool("t.confirm", {"label": "a", "nonce": nonce}, progress_callback=on_progress)
        envelope = envelope_of(result)
        assert envelope["status"] == "executed", envelope
        assert envelope["result"]["content"][0]["text"] == "accept:yes"
        # The upstream's own question reached the user unchanged.
        [asked] = answers.asked
        assert isinstance(asked, types.ElicitRequestFormParams) and asked.message == "Confirm a?"
        assert set(asked.requested_schema["properties"]) == {"answer"}
        # The upstream's progress after the answer reached the retry that was waiting for it.
        assert steps == [1]
        # The same nonce again is a replay: the upstream does not run (or ask) again.
        again = envelope_of(await client.call_tool("t.confirm", {"label": "a", "nonce": nonce}))
        assert again["status"] == "replayed" and again["result"] == envelope["result"]
        assert len(answers.asked) == 1
    assert executions(counter_dir) == ["confirm a accept:yes"]
    body = verifier.verify_envelope(envelope, published_keys(tmp_path, config))
    assert body["status"] == "executed" and body["nonce"] == nonce
    assert body["result_hash"] == verifier.result_hash(envelope["result"])


async def test_a_2026_caller_answers_the_upstream_sampling_request_in_a_round(tmp_path: Path) -> None:
    counter_dir = tmp_path / "upstream"
    config = write_config(tmp_path, counter_dir)
    prompts: list[str] = []

    async def sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        content = params.messages[0].content
        prompts.append(content.text if isinstance(content, types.TextContent) else "")
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="deep"), model="test-model"
        )

    async with serving(tmp_path, config, "stdio", sampling_callback=sample) as client:
        envelope = envelope_of(await client.call_tool("t.muse", {"label": "sea", "nonce": fresh_nonce()}))
        assert envelope["status"] == "executed", envelope
        assert envelope["result"]["content"][0]["text"] == "deep"
    assert prompts == ["Muse on sea"]
    assert executions(counter_dir) == ["muse sea deep"]


async def test_a_2026_caller_without_elicitation_gets_the_upstream_elicitation_declined(tmp_path: Path) -> None:
    counter_dir = tmp_path / "upstream"
    config = write_config(tmp_path, counter_dir)
    async with serving(tmp_path, config, "stdio") as client:
        envelope = envelope_of(await client.call_tool("t.confirm", {"label": "a", "nonce": fresh_nonce()}))
        assert envelope["status"] == "executed", envelope
        assert envelope["result"]["content"][0]["text"] == "decline:"
    assert executions(counter_dir) == ["confirm a decline:"]


async def test_a_handshake_era_caller_still_gets_the_upstream_elicitation_relayed(tmp_path: Path) -> None:
    counter_dir = tmp_path / "upstream"
    config = write_config(tmp_path, counter_dir)
    answers = Answers("legacy")
    async with serving(tmp_path, config, "stdio", mode="legacy", elicitation_callback=answers) as client:
        assert client.protocol_version != "2026-07-28"
        envelope = envelope_of(await client.call_tool("t.confirm", {"label": "b", "nonce": fresh_nonce()}))
        assert envelope["status"] == "executed", envelope
        assert envelope["result"]["content"][0]["text"] == "accept:legacy"
    assert [params.message for params in answers.asked] == ["Confirm b?"]
    assert executions(counter_dir) == ["confirm b accept:legacy"]


async def test_a_forged_or_spent_request_state_is_refused_and_nothing_runs_twice(tmp_path: Path) -> None:
    counter_dir = tmp_path / "upstream"
    config = write_config(tmp_path, counter_dir)
    arguments = {"label": "c", "nonce": fresh_nonce()}
    yes: types.InputResponses = {INPUT_KEY: types.ElicitResult(action="accept", content={"answer": "ok"})}
    async with serving(tmp_path, config, "http", elicitation_callback=Answers("unused")) as client:
        first = await client.session.call_tool("t.confirm", arguments, allow_input_required=True)
        assert isinstance(first, types.InputRequiredResult) and first.request_state is not None
        [(key, request)] = (first.input_requests or {}).items()
        assert key == INPUT_KEY and isinstance(request, types.ElicitRequest)
        assert request.params.message == "Confirm c?"

        # A state the server never sealed is refused by the SDK; so is the real one on other arguments.
        with pytest.raises(MCPError):
            await client.session.call_tool(
                "t.confirm", arguments, input_responses=yes, request_state="upstream:" + "0" * 32 + ":1"
            )
        with pytest.raises(MCPError):
            await client.session.call_tool(
                "t.confirm", {**arguments, "label": "d"}, input_responses=yes, request_state=first.request_state
            )
        assert executions(counter_dir) == []

        done = await client.session.call_tool(
            "t.confirm", arguments, input_responses=yes, request_state=first.request_state, allow_input_required=True
        )
        assert isinstance(done, types.CallToolResult)
        assert envelope_of(done)["status"] == "executed"

        # The same round answered again: a clear tool error, no second execution, no traceback.
        spent = await client.session.call_tool(
            "t.confirm", arguments, input_responses=yes, request_state=first.request_state, allow_input_required=True
        )
        assert isinstance(spent, types.CallToolResult) and spent.is_error
        envelope = envelope_of(spent)
        assert (envelope["status"], envelope["error"]["code"]) == ("denied", "input_round_expired")
        assert envelope["receipt_hash"] is None
    assert executions(counter_dir) == ["confirm c accept:ok"]


@pytest.mark.parametrize("bound", ["call_timeout_seconds", "request_state_ttl_seconds"])
async def test_an_abandoned_round_answers_cancel_to_the_upstream_and_its_late_retry_is_refused(
    tmp_path: Path, bound: str
) -> None:
    counter_dir = tmp_path / "upstream"
    # The round waits min(mcp.request_state_ttl_seconds, the upstream's call_timeout_seconds): each
    # bound in turn is the shorter (10 s is the smallest TTL the configuration accepts).
    if bound == "call_timeout_seconds":
        config = write_config(tmp_path, counter_dir, call_timeout_seconds=3)
    else:
        config = write_config(tmp_path, counter_dir, call_timeout_seconds=50, request_state_ttl_seconds=10)
    arguments = {"label": "e", "nonce": fresh_nonce()}
    async with serving(tmp_path, config, "stdio", elicitation_callback=Answers("unused")) as client:
        first = await client.session.call_tool("t.confirm", arguments, allow_input_required=True)
        assert isinstance(first, types.InputRequiredResult)
        with anyio.fail_after(40):  # well before the 50 s call timeout of the TTL case
            while executions(counter_dir) != ["confirm e cancel:"]:
                await anyio.sleep(0.1)
        late = await client.session.call_tool(
            "t.confirm",
            arguments,
            input_responses={INPUT_KEY: types.ElicitResult(action="accept", content={"answer": "late"})},
            request_state=first.request_state,
            allow_input_required=True,
        )
        assert isinstance(late, types.CallToolResult) and late.is_error
        refused = envelope_of(late)
        assert (refused["status"], refused["error"]["code"]) == ("denied", "input_round_expired")
        # The call itself finished with a receipt: the same nonce replays the upstream's answer.
        with anyio.fail_after(30):
            while True:
                again = envelope_of(await client.call_tool("t.confirm", arguments))
                if again["status"] != "denied" or again["error"]["code"] != "in_progress":
                    break
                await anyio.sleep(0.1)
        assert again["status"] == "replayed", again
        assert again["result"]["content"][0]["text"] == "cancel:"
    assert executions(counter_dir) == ["confirm e cancel:"]


async def test_a_2026_caller_that_cancels_before_any_question_gets_the_cancellation_forwarded(
    tmp_path: Path,
) -> None:
    counter_dir = tmp_path / "upstream"
    config = write_config(tmp_path, counter_dir)
    arguments = {"seconds": 60, "label": "f", "nonce": fresh_nonce()}
    async with serving(tmp_path, config, "stdio", elicitation_callback=Answers("unused")) as client:
        async with anyio.create_task_group() as tasks:

            async def call() -> None:
                await client.call_tool("t.sleep", arguments)

            tasks.start_soon(call)
            with anyio.fail_after(60):
                while executions(counter_dir) != ["sleep f"]:
                    await anyio.sleep(0.1)
            tasks.cancel_scope.cancel()
        # The upstream got notifications/cancelled; the call is recorded indeterminate, never re-sent.
        with anyio.fail_after(60):
            while "sleep-cancelled f" not in executions(counter_dir):
                await anyio.sleep(0.1)
        with anyio.fail_after(30):
            while True:
                again = envelope_of(await client.call_tool("t.sleep", arguments))
                if again["error"]["code"] != "in_progress":
                    break
                await anyio.sleep(0.1)
        assert (again["status"], again["error"]["code"]) == ("denied", "outcome_unknown")
    assert executions(counter_dir) == ["sleep f", "sleep-cancelled f"]
