"""Runs are scoped by tenant (issue 9): a run_id two tenants share is never mixed without saying so.

Clients choose run ids (``_meta["dev.openexec/run_id"]``), so tenant B can reuse tenant A's.
``ledger timeline``, ``export --run`` and ``replay`` take ``--tenant``; without it they show every
tenant's receipts of the run, name the tenants, and warn on stderr when there are several.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from oe_testing.processes import run_cli_in_process

from openexec_mcp.gate.pipeline import CallContext
from openexec_mcp.runtime import Runtime

MODULES = ["oe_testing.actions", "oe_testing.ledger_actions"]


@pytest.fixture
def shared_run(make_runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch, state_dir: Path) -> None:
    """Tenant A calls add twice in run "shared", tenant B once in the same run id; then the runtime closes."""
    runtime = make_runtime(actions={"modules": MODULES})

    async def calls() -> None:
        for tenant, nonce in (("tenant-a", "nonce-a-0001"), ("tenant-b", "nonce-b-0001"), ("tenant-a", "nonce-a-0002")):
            ctx = CallContext(tenant_id=tenant, run_id="shared")
            answer = await runtime.gate.call("add", {"a": 1, "b": 2, "nonce": nonce}, ctx)
            assert answer.status == "executed"

    anyio.run(calls)
    runtime.close()
    monkeypatch.setenv("OPENEXEC_STATE_DIR", str(state_dir))
    monkeypatch.setenv("OPENEXEC_ACTIONS__MODULES", json.dumps(MODULES))


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    done = run_cli_in_process(capsys, *args)
    return done.returncode, done.stdout, done.stderr


def test_timeline_of_a_run_id_shared_by_two_tenants_shows_each_calls_tenant_and_warns(
    shared_run: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "ledger", "timeline", "shared")
    assert code == 0
    title, header, *rows = out.splitlines()
    assert title == "run shared of tenants tenant-a, tenant-b: 3 attempt(s)"
    assert header.split()[-1] == "TENANT"
    assert [row.split()[-1] for row in rows] == ["tenant-a", "tenant-b", "tenant-a"]
    assert "used by 2 tenants (tenant-a, tenant-b)" in err


def test_timeline_with_tenant_shows_only_that_tenants_calls(
    shared_run: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "ledger", "timeline", "shared", "--tenant", "tenant-b")
    assert (code, err) == (0, "")
    title, header, *rows = out.splitlines()
    assert title == "run shared of tenant tenant-b: 1 attempt(s)"
    assert "TENANT" not in header and [row.split()[0] for row in rows] == ["1"]
    assert run(capsys, "ledger", "timeline", "shared", "--tenant", "tenant-c")[0] == 2


def test_export_of_a_shared_run_filters_by_tenant_and_warns_when_mixed(
    shared_run: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "ledger", "export", "--run", "shared")
    assert code == 0 and len(out.splitlines()) == 3 and "used by 2 tenants" in err
    code, out, err = run(capsys, "ledger", "export", "--run", "shared", "--tenant", "tenant-a")
    assert (code, err) == (0, "")
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [0, 2]


def test_replay_of_a_shared_run_names_each_lines_tenant_or_replays_one_tenant(
    shared_run: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "ledger", "replay", "shared")
    assert code == 0 and "used by 2 tenants" in err
    header, *rows = out.splitlines()[:-1]
    assert header.split()[4] == "TENANT"
    assert [row.split()[4] for row in rows] == ["tenant-a", "tenant-b", "tenant-a"]
    code, out, err = run(capsys, "ledger", "replay", "shared", "--tenant", "tenant-b")
    assert (code, err) == (0, "")
    assert [row.split()[0] for row in out.splitlines()[1:-1]] == ["1"]
