"""The operator's decision on an ``indeterminate`` call (SPEC §4), in process on a real SQLite file.

``tests/test_crash.py`` drives ``openexec-mcp ledger resolve`` against real killed servers; these
tests pin each refusal of :func:`openexec_mcp.ledger.resolve.resolve_indeterminate` and the receipts it
writes, and the CLI's exit codes.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from oe_testing.actions import executions
from oe_testing.receipts import body_of_receipt

from openexec_mcp.cli import main
from openexec_mcp.core.action import ActionRequest
from openexec_mcp.core.canonical import canonicalize
from openexec_mcp.core.clock import format_timestamp, utc_now
from openexec_mcp.errors import ResolutionRefusedError
from openexec_mcp.gate.pipeline import AUTO_APPROVAL, CallContext
from openexec_mcp.ledger.resolve import resolve_indeterminate
from openexec_mcp.runtime import Runtime
from openexec_mcp.store.base import NonceClaim

pytestmark = pytest.mark.anyio

CTX = CallContext(tenant_id="default", run_id="run-1")
MODULES = {"modules": ["oe_testing.actions", "oe_testing.crash_actions"]}


def cut_off(
    make_runtime: Callable[..., Runtime], action: str, payload: dict[str, Any], nonce: str, *, request: str | None = ""
) -> tuple[Runtime, str]:
    """A call claimed durably by a process that then died; the next start records it indeterminate."""
    crashed = make_runtime(actions=MODULES)
    call = ActionRequest(action, payload, nonce)
    exec_id = secrets.token_hex(16)
    crashed.store.claim_nonce(
        NonceClaim(
            tenant_id="default",
            nonce=nonce,
            action=action,
            action_hash=call.action_hash(),
            exec_id=exec_id,
            run_id="run-1",
            approval=canonicalize(dict(AUTO_APPROVAL)).decode(),
            started_at=format_timestamp(utc_now()),
            request=call.canonical_bytes().decode() if request == "" else request,
        )
    )
    crashed.close()
    restarted = make_runtime(actions=MODULES)
    record = restarted.store.get_nonce_by_exec_id(exec_id)
    assert record is not None and record.state == "indeterminate"
    return restarted, exec_id


async def test_mark_failed_records_a_failed_receipt_and_retries_replay_it(
    make_runtime: Callable[..., Runtime], counter_file: Path
) -> None:
    runtime, exec_id = cut_off(make_runtime, "count", {"label": "x"}, "nonce-0001")
    resolution = await resolve_indeterminate(runtime.gate, exec_id, "mark_failed")
    assert (resolution.status, resolution.error_code, resolution.original_exec_id) == (
        "failed",
        "operator_marked_failed",
        exec_id,
    )
    body = body_of_receipt(json.loads(resolution.entry.envelope))
    assert (body["status"], body["error_code"], body["original_exec_id"], body["nonce"]) == (
        "failed",
        "operator_marked_failed",
        exec_id,
        "nonce-0001",
    )
    assert body["exec_id"] == resolution.entry.exec_id != exec_id
    assert body["run_id"] == "run-1" and body["result_hash"] is None

    retry = await runtime.gate.call("count", {"label": "x", "nonce": "nonce-0001"}, CTX)
    assert retry.status == "replayed"
    assert retry.envelope["error"]["code"] == "operator_marked_failed"
    assert executions(counter_file) == 0


async def test_rerun_of_an_idempotent_action_runs_it_once_and_retries_replay_the_result(
    make_runtime: Callable[..., Runtime], counter_file: Path
) -> None:
    runtime, exec_id = cut_off(make_runtime, "upsert_then_crash", {"label": "x"}, "nonce-0001")
    resolution = await resolve_indeterminate(runtime.gate, exec_id, "rerun")
    assert (resolution.decision, resolution.status) == ("rerun", "executed")
    assert executions(counter_file) == 1
    body = body_of_receipt(json.loads(resolution.entry.envelope))
    assert (body["status"], body["original_exec_id"]) == ("executed", exec_id)
    retry = await runtime.gate.call("upsert_then_crash", {"label": "x", "nonce": "nonce-0001"}, CTX)
    assert (retry.status, retry.envelope["result"]) == ("replayed", {"executions": 1})
    with pytest.raises(ResolutionRefusedError, match="already decided") as refused:
        await resolve_indeterminate(runtime.gate, exec_id, "rerun")
    assert refused.value.code == "resolution_refused"
    assert executions(counter_file) == 1


async def test_rerun_of_an_action_not_declared_idempotent_is_refused_and_records_nothing(
    make_runtime: Callable[..., Runtime], counter_file: Path
) -> None:
    runtime, exec_id = cut_off(make_runtime, "count", {"label": "x"}, "nonce-0001")
    size = runtime.store.ledger_size()
    with pytest.raises(ResolutionRefusedError, match="idempotent"):
        await resolve_indeterminate(runtime.gate, exec_id, "rerun")
    assert runtime.store.ledger_size() == size
    record = runtime.store.get_nonce_by_exec_id(exec_id)
    assert record is not None and record.state == "indeterminate"
    assert executions(counter_file) == 0


@pytest.mark.parametrize(
    "request_text", [None, '{"action":"upsert_then_crash","nonce":"nonce-0001","payload":{"label":"y"}}']
)
async def test_rerun_refuses_a_request_that_was_not_recorded_intact(
    make_runtime: Callable[..., Runtime], counter_file: Path, request_text: str | None
) -> None:
    runtime, exec_id = cut_off(make_runtime, "upsert_then_crash", {"label": "x"}, "nonce-0001", request=request_text)
    with pytest.raises(ResolutionRefusedError, match="not recorded intact"):
        await resolve_indeterminate(runtime.gate, exec_id, "rerun")
    assert executions(counter_file) == 0


async def test_only_an_indeterminate_call_can_be_resolved(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime(actions=MODULES)
    done = await runtime.gate.call("echo", {"msg": "hi", "nonce": "nonce-0001"}, CTX)
    for exec_id, reason in ((done.envelope["exec_id"], "is finished"), ("0" * 32, "no call with exec_id")):
        for decision in ("rerun", "mark_failed"):
            with pytest.raises(ResolutionRefusedError, match=reason):
                await resolve_indeterminate(runtime.gate, exec_id, decision)  # type: ignore[arg-type]


def test_the_cli_resolves_once_then_refuses_with_exit_code_2(
    make_runtime: Callable[..., Runtime],
    monkeypatch: pytest.MonkeyPatch,
    state_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    runtime, exec_id = cut_off(make_runtime, "count", {"label": "x"}, "nonce-0001")
    runtime.close()
    monkeypatch.setenv("OPENEXEC_STATE_DIR", str(state_dir))
    monkeypatch.setenv("OPENEXEC_ACTIONS__MODULES", json.dumps(MODULES["modules"]))
    assert main(["ledger", "resolve", exec_id, "--mark-failed"]) == 0
    assert capsys.readouterr().out.startswith(f"RESOLVED {exec_id} by mark_failed: status=failed")
    assert main(["ledger", "resolve", exec_id, "--mark-failed"]) == 2
    assert "resolution_refused" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:  # exactly one decision
        main(["ledger", "resolve", exec_id])
    assert usage.value.code == 2
    with pytest.raises(SystemExit):
        main(["ledger", "resolve", exec_id, "--rerun", "--mark-failed"])
    assert main(["ledger", "verify"]) == 0
