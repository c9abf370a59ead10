"""The gate contract for every source of actions (SPEC §4, §6, §10, §11, §12).

Upstream tools and the real actions reach the world through these outcomes: a precheck refusal,
a call that sent nothing (the claim released), a call sent without an answer (``indeterminate``),
an upstream ``isError`` (``failed`` with its result kept). And the fail-closed rule: an unexpected
exception inside the gate is ``internal_error`` with a receipt, never a traceback or silence.
Each test counts executions on disk and checks the ledger, so nothing ran or leaked unnoticed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from oe_testing import verifier
from oe_testing.actions import executions
from pydantic import BaseModel

from openexec_mcp import action
from openexec_mcp.errors import (
    OutcomeUnknownError,
    UpstreamError,
    UpstreamUnavailableError,
    UrlNotAllowedError,
)
from openexec_mcp.gate.pipeline import Answer, CallContext, GateAnswer
from openexec_mcp.registry import Action
from openexec_mcp.runtime import Runtime

pytestmark = pytest.mark.anyio

CTX = CallContext(tenant_id="default", run_id="run-1")


class Target(BaseModel):
    url: str


class Slow(BaseModel):
    label: str


def count(counter: Path) -> None:
    with counter.open("a") as handle:
        handle.write("x\n")


@pytest.fixture
def counter(counter_file: Path) -> Path:
    return counter_file


def answered(answer: GateAnswer) -> Answer:
    assert isinstance(answer, Answer)
    return answer


def code(answer: GateAnswer) -> str | None:
    error = answered(answer).envelope["error"]
    return None if error is None else error["code"]


def receipt_body(answer: GateAnswer) -> dict[str, Any]:
    envelope = answered(answer).envelope
    return verifier.decode_payload(envelope["receipt"])


def sources(counter: Path) -> list[Action]:
    """Actions standing for an upstream and a real action, each counting what it really did."""
    flaky = {"down": True}

    def refuse_local(target: Target) -> None:
        if "localhost" in target.url:
            raise UrlNotAllowedError("the URL is not allowed")

    @action(name="fetch", read_only=False)
    def fetch(target: Target) -> dict[str, Any]:
        count(counter)
        return {"fetched": target.url}

    @action(name="up.flaky")
    async def up_flaky(target: Target) -> dict[str, Any]:
        if flaky["down"]:
            flaky["down"] = False
            raise UpstreamUnavailableError("the upstream is not running; nothing was sent")
        count(counter)
        return {"content": [], "structuredContent": None, "isError": False}

    @action(name="up.silent")
    async def up_silent(target: Target) -> dict[str, Any]:
        count(counter)
        raise OutcomeUnknownError("sent upstream; no answer came")

    @action(name="up.failing")
    async def up_failing(target: Target) -> dict[str, Any]:
        count(counter)
        result = {"content": [{"type": "text", "text": "disk full"}], "structuredContent": None, "isError": True}
        raise UpstreamError("the upstream answered isError", result=result)

    @action(name="broken.receipt")
    def broken(target: Target) -> dict[str, Any]:
        count(counter)
        return {"ok": True}

    fetch_checked = Action(**{**_fields(fetch), "precheck": refuse_local})
    return [fetch_checked, up_flaky, up_silent, up_failing, broken]


def _fields(item: Action) -> dict[str, Any]:
    names = (
        "name",
        "handler",
        "input_model",
        "output_model",
        "title",
        "description",
        "read_only",
        "destructive",
        "idempotent",
        "open_world",
        "approval",
    )
    return {name: getattr(item, name) for name in names}


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime], counter: Path) -> Iterator[Runtime]:
    yield make_runtime(registry_actions=sources(counter))


async def test_precheck_refusal_is_denied_with_a_receipt_and_consumes_nothing(runtime: Runtime, counter: Path):
    refused = await runtime.gate.call("fetch", {"url": "http://localhost/", "nonce": "nonce-pre-1"}, CTX)
    assert (answered(refused).status, code(refused)) == ("denied", "url_not_allowed")
    assert receipt_body(refused)["error_code"] == "url_not_allowed"
    assert executions(counter) == 0
    assert runtime.store.get_nonce("default", "nonce-pre-1") is None  # nonce not consumed


async def test_nothing_sent_releases_the_claim_so_the_retry_runs_once(runtime: Runtime, counter: Path):
    first = await runtime.gate.call("up.flaky", {"url": "x", "nonce": "nonce-flaky-1"}, CTX)
    assert (answered(first).status, code(first)) == ("denied", "upstream_unavailable")
    assert receipt_body(first)["status"] == "denied"
    assert runtime.store.get_nonce("default", "nonce-flaky-1") is None
    retry = await runtime.gate.call("up.flaky", {"url": "x", "nonce": "nonce-flaky-1"}, CTX)
    assert answered(retry).status == "executed"
    assert executions(counter) == 1
    assert runtime.store.ledger_size() == 2


async def test_sent_without_an_answer_is_indeterminate_at_once_and_never_resent(runtime: Runtime, counter: Path):
    first = await runtime.gate.call("up.silent", {"url": "x", "nonce": "nonce-silent-1"}, CTX)
    assert (answered(first).status, code(first)) == ("indeterminate", "outcome_unknown")
    assert answered(first).envelope["receipt"] is not None
    assert receipt_body(first)["status"] == "indeterminate"
    retry = await runtime.gate.call("up.silent", {"url": "x", "nonce": "nonce-silent-1"}, CTX)
    assert (answered(retry).status, code(retry)) == ("denied", "outcome_unknown")
    assert executions(counter) == 1
    record = runtime.store.get_nonce("default", "nonce-silent-1")
    assert record is not None and record.state == "indeterminate"  # ledger resolve decides it


async def test_upstream_is_error_is_failed_with_its_result_kept_and_hashed(runtime: Runtime):
    failed = await runtime.gate.call("up.failing", {"url": "x", "nonce": "nonce-fail-1"}, CTX)
    envelope = answered(failed).envelope
    assert (envelope["status"], code(failed)) == ("failed", "upstream_error")
    assert envelope["result"]["content"][0]["text"] == "disk full"
    assert receipt_body(failed)["result_hash"] == verifier.result_hash(envelope["result"])
    replay = await runtime.gate.call("up.failing", {"url": "x", "nonce": "nonce-fail-1"}, CTX)
    assert answered(replay).status == "replayed"
    assert answered(replay).envelope["result"] == envelope["result"]


async def test_unexpected_exception_before_the_handler_is_denied_internal_error_with_receipt(
    runtime: Runtime, counter: Path, monkeypatch: pytest.MonkeyPatch
):
    def explode(*args: Any, **kwargs: Any) -> Any:
        raise ArithmeticError("a bug deep in the approval step")

    monkeypatch.setattr(runtime.store, "claim_nonce", explode)
    answer = await runtime.gate.call("fetch", {"url": "http://example.org/", "nonce": "nonce-bug-1"}, CTX)
    envelope = answered(answer).envelope
    assert (envelope["status"], code(answer)) == ("denied", "internal_error")
    assert "ArithmeticError" not in envelope["error"]["message"] and "bug" not in envelope["error"]["message"]
    assert receipt_body(answer)["error_code"] == "internal_error"
    assert executions(counter) == 0
    monkeypatch.undo()
    retry = await runtime.gate.call("fetch", {"url": "http://example.org/", "nonce": "nonce-bug-1"}, CTX)
    assert answered(retry).status == "executed"  # nothing was consumed by the failed attempt


async def test_unexpected_exception_after_the_handler_is_failed_internal_error_with_receipt(
    runtime: Runtime, counter: Path, monkeypatch: pytest.MonkeyPatch
):
    real_finish = runtime.store.finish
    calls = {"n": 0}

    def finish_once_broken(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyError("a bug while recording")
        return real_finish(*args, **kwargs)

    monkeypatch.setattr(runtime.store, "finish", finish_once_broken)
    answer = await runtime.gate.call("broken.receipt", {"url": "x", "nonce": "nonce-bug-2"}, CTX)
    assert (answered(answer).status, code(answer)) == ("failed", "internal_error")
    assert receipt_body(answer)["status"] == "failed"
    assert executions(counter) == 1
    replay = await runtime.gate.call("broken.receipt", {"url": "x", "nonce": "nonce-bug-2"}, CTX)
    assert (answered(replay).status, code(replay)) == ("replayed", "internal_error")
    assert executions(counter) == 1  # never re-run


async def test_a_saturated_action_is_refused_at_admission_and_records_nothing(
    make_runtime: Callable[..., Runtime], counter: Path
):
    release = threading.Event()

    @action(name="slow.sync")
    def slow(payload: Slow) -> dict[str, Any]:
        count(counter)
        release.wait(30)
        return {"done": payload.label}

    runtime = make_runtime(registry_actions=[slow], limits={"handler_concurrency": 2, "handler_timeout_seconds": 1})
    answers: list[GateAnswer] = []
    async with anyio.create_task_group() as tasks:

        async def call(n: int) -> None:
            answers.append(await runtime.gate.call("slow.sync", {"label": str(n), "nonce": f"nonce-slow-{n}"}, CTX))

        tasks.start_soon(call, 1)
        tasks.start_soon(call, 2)
    # Both timed out and were abandoned; their threads still run and keep their slots.
    assert [code(a) for a in answers] == ["handler_timeout", "handler_timeout"]
    size = runtime.store.ledger_size()
    refused = await runtime.gate.call("slow.sync", {"label": "3", "nonce": "nonce-slow-3"}, CTX)
    assert (answered(refused).status, code(refused)) == ("denied", "action_saturated")
    assert answered(refused).envelope["receipt_hash"] is None
    assert runtime.store.ledger_size() == size
    assert runtime.store.get_nonce("default", "nonce-slow-3") is None
    release.set()
    with anyio.fail_after(10):
        while runtime.gate.runner.busy("slow.sync"):
            await anyio.sleep(0.01)
    again = await runtime.gate.call("slow.sync", {"label": "3", "nonce": "nonce-slow-3"}, CTX)
    assert answered(again).status == "executed"


async def test_meta_nonce_is_accepted_on_every_tool_and_the_argument_is_not_payload(runtime: Runtime):
    ctx = CallContext(tenant_id="default", run_id="run-1", meta_nonce="nonce-meta-1")
    answer = await runtime.gate.call("fetch", {"url": "http://example.org/"}, ctx)
    assert answered(answer).status == "executed"
    body = receipt_body(answer)
    assert (body["nonce"], body["nonce_source"]) == ("nonce-meta-1", "client")


async def test_optional_nonce_action_gets_a_server_nonce_recorded_as_such(make_runtime: Callable[..., Runtime]):
    @action(name="up.open")
    async def up_open(target: Target) -> dict[str, Any]:
        return {"content": [], "structuredContent": None, "isError": False}

    runtime = make_runtime(registry_actions=[Action(**{**_fields(up_open), "nonce_required": False})])
    answer = await runtime.gate.call("up.open", {"url": "x"}, CTX)
    body = receipt_body(answer)
    assert body["nonce_source"] == "server" and body["nonce"].startswith("srv:")
    required = await runtime.gate.call("up.open", {"url": "x"}, CTX)
    assert answered(required).status == "executed"  # a new server nonce each time: no replay protection


async def test_upstream_facts_are_signed_into_the_receipt(make_runtime: Callable[..., Runtime]):
    @action(name="fs.read")
    async def fs_read(target: Target) -> dict[str, Any]:
        return {"content": [], "structuredContent": None, "isError": False}

    upstream = {"name": "fs", "server": {"name": "secure-filesystem-server", "version": "0.2.0"}}
    runtime = make_runtime(registry_actions=[Action(**{**_fields(fs_read), "upstream": upstream})])
    answer = await runtime.gate.call("fs.read", {"url": "x", "nonce": "nonce-up-1"}, CTX)
    assert receipt_body(answer)["upstream"] == upstream
