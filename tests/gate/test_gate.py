"""The nonce table of SPEC §4, row by row, through the real gate on a real SQLite file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from oe_testing.actions import executions
from oe_testing.receipts import body_of
from pydantic import BaseModel

from openexec_mcp import action
from openexec_mcp.gate.pipeline import CallContext
from openexec_mcp.registry import load_registry
from openexec_mcp.runtime import Runtime
from openexec_mcp.store.base import NonceClaim

pytestmark = pytest.mark.anyio

CTX = CallContext(tenant_id="default", run_id="run-1")


async def test_new_nonce_runs_handler_once_and_returns_receipt(
    make_runtime: Callable[..., Runtime], counter_file: Path
):
    runtime = make_runtime()
    answer = await runtime.gate.call("count", {"label": "a", "nonce": "nonce-0001"}, CTX)
    assert answer.status == "executed"
    assert answer.envelope["result"] == {"executions": 1}
    assert executions(counter_file) == 1
    body = body_of(answer.envelope)
    assert body["status"] == "executed"
    assert body["seq"] == 0 and body["prev"] is None
    assert body["approval"] == {
        "method": "auto",
        "approval_id": None,
        "kid": None,
        "issued_by": None,
        "artifact_hash": None,
    }
    assert body["policy_hash"] == runtime.policy.policy_hash
    assert body["tenant_id"] == "default" and body["run_id"] == "run-1" and body["nonce"] == "nonce-0001"


async def test_same_nonce_same_call_is_replayed_without_running(
    make_runtime: Callable[..., Runtime], counter_file: Path
):
    runtime = make_runtime()
    first = await runtime.gate.call("count", {"label": "a", "nonce": "nonce-0001"}, CTX)
    again = await runtime.gate.call("count", {"label": "a", "nonce": "nonce-0001"}, CTX)
    assert again.status == "replayed"
    assert executions(counter_file) == 1
    assert again.envelope["result"] == first.envelope["result"]
    assert again.envelope["exec_id"] != first.envelope["exec_id"]
    body = body_of(again.envelope)
    assert body["original_exec_id"] == first.envelope["exec_id"]
    assert body["result_hash"] == body_of(first.envelope)["result_hash"]
    assert body["prev"] == first.envelope["receipt_hash"]


async def test_same_nonce_other_payload_is_nonce_conflict(make_runtime: Callable[..., Runtime], counter_file: Path):
    runtime = make_runtime()
    await runtime.gate.call("count", {"label": "a", "nonce": "nonce-0001"}, CTX)
    other = await runtime.gate.call("count", {"label": "b", "nonce": "nonce-0001"}, CTX)
    assert other.status == "denied"
    assert other.envelope["error"]["code"] == "nonce_conflict"
    assert body_of(other.envelope)["error_code"] == "nonce_conflict"
    assert executions(counter_file) == 1


async def test_same_nonce_other_action_is_nonce_conflict(make_runtime: Callable[..., Runtime]):
    runtime = make_runtime()
    await runtime.gate.call("count", {"nonce": "nonce-0001"}, CTX)
    other = await runtime.gate.call("boom", {"nonce": "nonce-0001"}, CTX)
    assert other.envelope["error"]["code"] == "nonce_conflict"


async def test_nonces_are_scoped_by_tenant(make_runtime: Callable[..., Runtime], counter_file: Path):
    runtime = make_runtime()
    await runtime.gate.call("count", {"label": "a", "nonce": "nonce-0001"}, CTX)
    other_tenant = CallContext(tenant_id="other", run_id="run-2")
    answer = await runtime.gate.call("count", {"label": "b", "nonce": "nonce-0001"}, other_tenant)
    assert answer.status == "executed"
    assert executions(counter_file) == 2


class Empty(BaseModel):
    pass


async def test_second_call_while_first_runs_is_in_progress_then_replayed(make_runtime: Callable[..., Runtime]):
    started, release = anyio.Event(), anyio.Event()
    runs: list[int] = []

    @action(name="slow", destructive=False)
    async def slow(payload: Empty) -> dict[str, int]:
        runs.append(1)
        started.set()
        await release.wait()
        return {"runs": len(runs)}

    runtime = make_runtime(registry_actions=[slow])
    answers: list[Any] = []
    during: Any = None

    async def first() -> None:
        answers.append(await runtime.gate.call("slow", {"nonce": "nonce-slow"}, CTX))

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await started.wait()
        during = await runtime.gate.call("slow", {"nonce": "nonce-slow"}, CTX)
        release.set()
    assert during.status == "denied" and during.envelope["error"]["code"] == "in_progress"
    assert answers[0].status == "executed"
    after = await runtime.gate.call("slow", {"nonce": "nonce-slow"}, CTX)
    assert after.status == "replayed"
    assert runs == [1]


async def test_slow_handler_does_not_block_other_nonces(make_runtime: Callable[..., Runtime]):
    started, release = anyio.Event(), anyio.Event()

    @action(name="slow", destructive=False)
    async def slow(payload: Empty) -> dict[str, bool]:
        started.set()
        await release.wait()
        return {"ok": True}

    @action(name="fast", destructive=False)
    def fast(payload: Empty) -> dict[str, bool]:
        return {"ok": True}

    runtime = make_runtime(registry_actions=[slow, fast])
    meanwhile: Any = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(runtime.gate.call, "slow", {"nonce": "nonce-slow"}, CTX)
        await started.wait()
        meanwhile = await runtime.gate.call("fast", {"nonce": "nonce-fast"}, CTX)
        release.set()
    assert meanwhile.status == "executed"


async def test_call_cut_off_by_restart_is_indeterminate_and_never_rerun(
    make_runtime: Callable[..., Runtime], counter_file: Path
):
    runtime = make_runtime()
    action_hash = _hash("count", {"label": "a"}, "nonce-crash")
    # The durable 'started' claim of a call whose process then died (the handler never finished).
    runtime.store.claim_nonce(
        NonceClaim(
            tenant_id="default",
            nonce="nonce-crash",
            action="count",
            action_hash=action_hash,
            exec_id="e" * 32,
            run_id="run-1",
            approval='{"method":"auto"}',
            started_at="2026-11-21T00:00:00.000Z",
        )
    )
    runtime.close()
    restarted = make_runtime()
    entry = restarted.store.get_entry("e" * 32)
    assert entry is not None and entry.status == "indeterminate"
    retry = await restarted.gate.call("count", {"label": "a", "nonce": "nonce-crash"}, CTX)
    assert retry.status == "denied" and retry.envelope["error"]["code"] == "outcome_unknown"
    assert executions(counter_file) == 0


async def test_failed_approval_consumes_nothing_and_corrected_retry_runs(
    make_runtime: Callable[..., Runtime], counter_file: Path
):
    strict = make_runtime(policy={"actions": {"count": {"approval": "signed"}}})
    denied = await strict.gate.call("count", {"label": "a", "nonce": "nonce-0001"}, CTX)
    assert denied.status == "denied" and denied.envelope["error"]["code"] == "approval_required"
    assert body_of(denied.envelope)["status"] == "denied"
    assert strict.store.get_nonce("default", "nonce-0001") is None
    strict.close()
    relaxed = make_runtime()
    retried = await relaxed.gate.call("count", {"label": "a", "nonce": "nonce-0001"}, CTX)
    assert retried.status == "executed"
    assert executions(counter_file) == 1


async def test_deny_policy_refuses_with_receipt(make_runtime: Callable[..., Runtime], counter_file: Path):
    runtime = make_runtime(policy={"actions": {"count": {"approval": "deny"}}})
    answer = await runtime.gate.call("count", {"nonce": "nonce-0001"}, CTX)
    assert answer.envelope["error"]["code"] == "approval_denied"
    assert answer.envelope["receipt_hash"] is not None
    assert executions(counter_file) == 0


async def test_nonce_error_wins_over_approval_error(make_runtime: Callable[..., Runtime]):
    runtime = make_runtime()
    await runtime.gate.call("count", {"label": "a", "nonce": "nonce-0001"}, CTX)
    runtime.close()
    strict = make_runtime(policy={"actions": {"count": {"approval": "signed"}}})
    conflict = await strict.gate.call("count", {"label": "b", "nonce": "nonce-0001"}, CTX)
    assert conflict.envelope["error"]["code"] == "nonce_conflict"


@pytest.mark.parametrize(
    "arguments",
    [
        {},  # missing nonce
        {"nonce": "short"},
        {"nonce": "has space in it"},
        {"nonce": 12345678},
        {"nonce": "x" * 129},
    ],
)
async def test_missing_or_malformed_nonce_is_invalid_request_and_records_nothing(
    make_runtime: Callable[..., Runtime], arguments: dict[str, Any]
):
    runtime = make_runtime()
    answer = await runtime.gate.call("count", arguments, CTX)
    assert answer.envelope["error"]["code"] == "invalid_request"
    assert answer.envelope["exec_id"] is None and "receipt" not in answer.envelope
    assert runtime.store.ledger_size() == 0


@pytest.mark.parametrize(
    ("name", "arguments", "code"),
    [
        ("nope", {"nonce": "nonce-0001"}, "unknown_action"),
        (None, {"nonce": "nonce-0001"}, "unknown_action"),
        ("count", {"label": 5, "nonce": "nonce-0001"}, "invalid_request"),
        ("count", {"labl": "typo", "nonce": "nonce-0001"}, "invalid_request"),
        ("count", ["not", "an", "object"], "invalid_request"),
        ("count", {"label": float("nan"), "nonce": "nonce-0001"}, "invalid_request"),
        ("count", {"label": 2**53, "nonce": "nonce-0001"}, "invalid_request"),
        ("count", {"label": "\ud800", "nonce": "nonce-0001"}, "invalid_request"),
    ],
)
async def test_bad_input_is_refused_before_anything_is_recorded(
    make_runtime: Callable[..., Runtime], counter_file: Path, name: Any, arguments: Any, code: str
):
    runtime = make_runtime()
    answer = await runtime.gate.call(name, arguments, CTX)
    assert answer.envelope["error"]["code"] == code
    assert runtime.store.ledger_size() == 0
    assert runtime.store.get_nonce("default", "nonce-0001") is None
    assert executions(counter_file) == 0


async def test_add_refuses_strings_never_concatenates(make_runtime: Callable[..., Runtime]):
    runtime = make_runtime(registry_actions=list(load_registry().values()))
    refused = await runtime.gate.call("add", {"a": "1", "b": "2", "nonce": "nonce-0001"}, CTX)
    assert refused.envelope["error"]["code"] == "invalid_request"
    summed = await runtime.gate.call("add", {"a": 1, "b": 2.5, "nonce": "nonce-0002"}, CTX)
    assert summed.envelope["result"] == {"sum": 3.5}


async def test_handler_that_raises_is_failed_with_receipt_and_hides_its_message(
    make_runtime: Callable[..., Runtime],
):
    runtime = make_runtime()
    answer = await runtime.gate.call("boom", {"nonce": "nonce-0001"}, CTX)
    assert answer.status == "failed"
    assert answer.envelope["error"]["code"] == "handler_error"
    assert "secret internal detail" not in json.dumps(answer.envelope)
    assert body_of(answer.envelope)["status"] == "failed"
    # The nonce stays consumed: the retry replays the failure instead of running again.
    again = await runtime.gate.call("boom", {"nonce": "nonce-0001"}, CTX)
    assert again.status == "replayed"
    assert again.envelope["error"]["code"] == "handler_error"


async def test_handler_returning_non_json_is_failed_with_receipt(make_runtime: Callable[..., Runtime]):
    runtime = make_runtime()
    answer = await runtime.gate.call("not_json", {"nonce": "nonce-0001"}, CTX)
    assert answer.status == "failed"
    assert answer.envelope["error"]["code"] == "invalid_result"
    assert runtime.store.get_nonce("default", "nonce-0001").state == "finished"  # type: ignore[union-attr]


async def test_receipts_form_a_gap_free_hash_chain(make_runtime: Callable[..., Runtime]):
    runtime = make_runtime()
    hashes: list[str] = []
    for i in range(5):
        answer = await runtime.gate.call("count", {"nonce": f"nonce-{i:04d}"}, CTX)
        body = body_of(answer.envelope)
        assert body["seq"] == i
        assert body["prev"] == (hashes[-1] if hashes else None)
        hashes.append(answer.envelope["receipt_hash"])


def _hash(action_name: str, payload: dict[str, Any], nonce: str) -> str:
    from openexec_mcp.core.action import compute_action_hash

    return compute_action_hash(action_name, payload, nonce)


async def test_async_handler_over_the_timeout_is_failed_with_receipt(make_runtime: Callable[..., Runtime]):
    never = anyio.Event()

    @action(name="stuck", destructive=False)
    async def stuck(payload: Empty) -> dict[str, bool]:
        await never.wait()
        return {"ok": True}

    runtime = make_runtime(registry_actions=[stuck], limits={"handler_timeout_seconds": 1})
    answer = await runtime.gate.call("stuck", {"nonce": "nonce-stuck"}, CTX)
    assert answer.status == "failed"
    assert answer.envelope["error"]["code"] == "handler_timeout"
    assert body_of(answer.envelope)["error_code"] == "handler_timeout"
    again = await runtime.gate.call("stuck", {"nonce": "nonce-stuck"}, CTX)
    assert again.status == "replayed"  # never re-run


async def test_rate_limit_refuses_per_tenant_and_records_nothing(
    make_runtime: Callable[..., Runtime], counter_file: Path
):
    runtime = make_runtime(limits={"rate_limit_per_second": 0.001, "rate_limit_burst": 2})
    results = [await runtime.gate.call("count", {"nonce": f"nonce-{i:04d}"}, CTX) for i in range(3)]
    assert [r.status for r in results] == ["executed", "executed", "denied"]
    assert results[2].envelope["error"]["code"] == "rate_limited"
    assert "receipt" not in results[2].envelope
    assert runtime.store.ledger_size() == 2
    assert runtime.store.get_nonce("default", "nonce-0002") is None
    other = await runtime.gate.call("count", {"nonce": "nonce-0002"}, CallContext(tenant_id="other", run_id="r"))
    assert other.status == "executed"
    assert executions(counter_file) == 3


async def test_store_failure_after_the_handler_ran_is_outcome_not_recorded_never_denied(
    make_runtime: Callable[..., Runtime], counter_file: Path, monkeypatch: pytest.MonkeyPatch
):
    from openexec_mcp.errors import StoreUnavailableError

    runtime = make_runtime()

    def broken_finish(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailableError("database went away")

    monkeypatch.setattr(runtime.store, "finish", broken_finish)
    answer = await runtime.gate.call("count", {"nonce": "nonce-lost"}, CTX)
    assert executions(counter_file) == 1
    assert answer.status == "failed"
    # Not store_unavailable ("nothing ran"): the handler ran, its outcome is not on record.
    assert answer.envelope["error"]["code"] == "outcome_not_recorded"
    assert answer.envelope["exec_id"] is not None
    retry = await runtime.gate.call("count", {"nonce": "nonce-lost"}, CTX)
    assert retry.envelope["error"]["code"] == "in_progress"
    assert executions(counter_file) == 1
