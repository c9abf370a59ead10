"""Nonce retention (SPEC §4): records go after ``nonce.retention_seconds``, receipts never, replays never.

The gate runs with an injected clock, so hours pass without a sleep. Pruning happens at start,
hourly on the runtime's housekeeping thread (never on the call path), and with
``openexec-mcp ledger prune-nonces``;
an approval issued before the horizon is refused, so a pruned nonce cannot be replayed with it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from oe_testing.actions import executions
from oe_testing.approvals import approvals_config, mint
from oe_testing.postgres import fresh_schema, require_postgres

from openexec_mcp.cli import main
from openexec_mcp.core.action import compute_action_hash
from openexec_mcp.core.clock import utc_now
from openexec_mcp.gate.pipeline import CallContext, Gate
from openexec_mcp.ledger.retention import NonceSweeper, retention_horizon
from openexec_mcp.runtime import Housekeeping, Runtime

pytestmark = pytest.mark.anyio

CTX = CallContext(tenant_id="default", run_id="run-1")
HOUR = timedelta(hours=1)


class Clock:
    """A clock that moves only when told."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def gate_with_clock(runtime: Runtime, clock: Clock) -> Gate:
    """The runtime's gate, rebuilt with an injected clock (same store, policy, key and approver)."""
    return Gate(
        registry=runtime.registry,
        policy=runtime.policy,
        store=runtime.store,
        server_key=runtime.server_key,
        server_id=runtime.settings.server_id,
        approver=runtime.gate.approver,
        clock=clock,
    )


def sweeper_with_clock(runtime: Runtime, clock: Clock, retention_seconds: int = 3600) -> NonceSweeper:
    """A retention sweeper on the runtime's store with the same injected clock."""
    return NonceSweeper(runtime.store, retention_seconds, clock)


def test_retention_horizon_is_now_minus_the_retention_period() -> None:
    now = datetime.fromisoformat("2026-11-21T10:00:00.123+00:00")
    assert retention_horizon(now, 86400) == "2026-11-20T10:00:00.123Z"


def test_the_sweeper_runs_at_most_once_per_interval(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime()
    clock = Clock(utc_now())
    sweeper = NonceSweeper(runtime.store, 3600, clock, interval_seconds=3600)
    first = sweeper.maybe_sweep()
    assert isinstance(first, threading.Thread)
    sweeper.join(10)
    clock.now += timedelta(minutes=59)
    assert sweeper.maybe_sweep() is None
    clock.now += timedelta(minutes=2)
    second = sweeper.maybe_sweep()
    assert isinstance(second, threading.Thread) and second is not first
    sweeper.join(10)


async def test_a_server_prunes_old_records_at_start_and_keeps_every_receipt(
    make_runtime: Callable[..., Runtime], counter_file: Path
) -> None:
    first = make_runtime()
    past = gate_with_clock(first, Clock(utc_now() - timedelta(days=2)))
    await past.call("count", {"label": "old", "nonce": "nonce-old-1"}, CTX)
    await past.call("echo", {"msg": "old", "nonce": "nonce-old-2"}, CTX)
    await first.gate.call("count", {"label": "new", "nonce": "nonce-new-1"}, CTX)
    first.close()

    restarted = make_runtime()  # default retention: one day
    assert restarted.store.get_nonce("default", "nonce-old-1") is None
    assert restarted.store.get_nonce("default", "nonce-old-2") is None
    assert restarted.store.get_nonce("default", "nonce-new-1") is not None
    assert restarted.store.ledger_size() == 3
    # Past retention a nonce is free again; a fresh nonce per call is the client's duty.
    again = await restarted.gate.call("count", {"label": "old", "nonce": "nonce-old-1"}, CTX)
    assert again.status == "executed"
    assert executions(counter_file) == 3


async def test_the_housekeeping_thread_sweeps_hourly_beside_the_calls(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime()
    clock = Clock(utc_now())
    gate = gate_with_clock(runtime, clock)
    housekeeping = Housekeeping(sweeper_with_clock(runtime, clock), tick_seconds=0.01)
    housekeeping.start()  # the start-up sweep (nothing yet)
    try:
        await gate.call("echo", {"msg": "a", "nonce": "nonce-0001"}, CTX)
        clock.now += HOUR / 2
        await gate.call("echo", {"msg": "b", "nonce": "nonce-0002"}, CTX)
        assert runtime.store.get_nonce("default", "nonce-0001") is not None  # not due yet, and not old yet

        clock.now += HOUR * 2
        await gate.call("echo", {"msg": "c", "nonce": "nonce-0003"}, CTX)
        with anyio.fail_after(10):  # the thread looks every 10 ms; the sweep is due now
            while runtime.store.get_nonce("default", "nonce-0002") is not None:
                await anyio.sleep(0.01)
    finally:
        housekeeping.stop()
    assert runtime.store.get_nonce("default", "nonce-0001") is None
    assert runtime.store.get_nonce("default", "nonce-0003") is not None
    assert runtime.store.ledger_size() == 3


async def test_a_pruned_nonce_cannot_be_replayed_with_its_old_approval(
    make_runtime: Callable[..., Runtime], counter_file: Path
) -> None:
    runtime = make_runtime(
        approvals=approvals_config(),
        policy={"actions": {"count": {"approval": "signed"}}},
        nonce={"retention_seconds": 3600},
    )
    clock = Clock(utc_now())
    gate = gate_with_clock(runtime, clock)
    payload: dict[str, Any] = {"label": "pay"}
    artifact = mint(compute_action_hash("count", payload, "nonce-0001"), now=clock.now)
    ctx = CallContext(tenant_id="default", run_id="run-1", approval_artifact=artifact)

    assert (await gate.call("count", {**payload, "nonce": "nonce-0001"}, ctx)).status == "executed"
    assert (await gate.call("count", {**payload, "nonce": "nonce-0001"}, ctx)).status == "replayed"
    clock.now += HOUR * 2
    assert sweeper_with_clock(runtime, clock).sweep() == 1
    assert runtime.store.get_nonce("default", "nonce-0001") is None

    replay = await gate.call("count", {**payload, "nonce": "nonce-0001"}, ctx)
    assert replay.status == "denied"
    assert replay.envelope["error"]["code"] == "approval_expired"
    assert executions(counter_file) == 1


async def test_an_artifact_issued_within_the_skew_in_the_future_cannot_run_twice_after_pruning(
    make_runtime: Callable[..., Runtime], counter_file: Path
) -> None:
    """Issue 9: the nonce record goes, the consumed approval_id stays until the artifact expired."""
    runtime = make_runtime(approvals=approvals_config(), policy={"actions": {"count": {"approval": "signed"}}})
    clock = Clock(utc_now())
    # A sweeper whose horizon (400 s) falls before the artifact's expires_at + skew (360 + 60 s).
    gate = gate_with_clock(runtime, clock)
    sweeper = sweeper_with_clock(runtime, clock, retention_seconds=400)
    payload: dict[str, Any] = {"label": "pay"}
    future = mint(
        compute_action_hash("count", payload, "nonce-0001"), now=clock.now + timedelta(seconds=65), ttl_seconds=300
    )
    ctx = CallContext(tenant_id="default", run_id="run-1", approval_artifact=future)

    assert (await gate.call("count", {**payload, "nonce": "nonce-0001"}, ctx)).status == "executed"
    clock.now += timedelta(seconds=405)
    assert sweeper.sweep() == 1
    assert runtime.store.get_nonce("default", "nonce-0001") is None

    again = await gate.call("count", {**payload, "nonce": "nonce-0001"}, ctx)
    assert (again.status, again.envelope["error"]["code"]) == ("denied", "approval_consumed")
    assert executions(counter_file) == 1


async def test_ledger_prune_nonces_deletes_only_what_is_past_the_horizon(
    make_runtime: Callable[..., Runtime],
    monkeypatch: pytest.MonkeyPatch,
    state_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    runtime = make_runtime()
    past = gate_with_clock(runtime, Clock(utc_now() - timedelta(days=3)))
    await past.call("echo", {"msg": "old", "nonce": "nonce-old-1"}, CTX)
    await runtime.gate.call("echo", {"msg": "new", "nonce": "nonce-new-1"}, CTX)
    runtime.close()

    monkeypatch.setenv("OPENEXEC_STATE_DIR", str(state_dir))
    monkeypatch.setenv("OPENEXEC_NONCE__RETENTION_SECONDS", str(2 * 86400))
    capsys.readouterr()
    assert main(["ledger", "prune-nonces"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("pruned 1 nonce record(s) finished before ")
    assert "the ledger keeps all 2 receipts" in out
    assert main(["ledger", "prune-nonces"]) == 0
    assert capsys.readouterr().out.startswith("pruned 0 nonce record(s)")
    assert main(["ledger", "verify"]) == 0


@pytest.mark.anyio
async def test_a_running_replica_records_a_dead_replicas_calls_on_its_sweep(
    make_runtime: Callable[..., Runtime],
) -> None:
    from openexec_mcp.core.action import compute_action_hash
    from openexec_mcp.gate.pipeline import CallContext
    from openexec_mcp.store import open_store
    from openexec_mcp.store.base import NonceClaim

    with fresh_schema(require_postgres()) as url:
        survivor = make_runtime(storage={"url": url})
        assert survivor.housekeeping.sweeper is not None
        dead = open_store(url)  # another replica, which then dies holding a started call
        dead.claim_nonce(
            NonceClaim(
                tenant_id="default",
                nonce="nonce-orphan",
                action="count",
                action_hash=compute_action_hash("count", {}, "nonce-orphan"),
                exec_id="d" * 32,
                run_id="run-dead",
                approval='{"approval_id":null,"artifact_hash":null,"issued_by":null,"kid":null,"method":"auto"}',
                started_at="2026-11-21T00:00:00.000Z",
            )
        )
        ctx = CallContext(tenant_id="default", run_id="run-1")
        before = await survivor.gate.call("count", {"nonce": "nonce-orphan"}, ctx)
        assert before.envelope["error"]["code"] == "in_progress"
        dead.close()  # its replica lock goes with it, as when the process dies

        survivor.housekeeping.sweeper.sweep()

        entry = survivor.store.get_entry("d" * 32)
        assert entry is not None and entry.status == "indeterminate"
        after = await survivor.gate.call("count", {"nonce": "nonce-orphan"}, ctx)
        assert after.envelope["error"]["code"] == "outcome_unknown"
        survivor.close()


def test_sqlite_sweeps_never_recover_started_calls(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime()
    assert runtime.housekeeping.sweeper is not None
    assert runtime.housekeeping.sweeper._recover is None  # pyright: ignore[reportPrivateUsage]  # own rows


async def test_the_hourly_sweep_never_prunes_an_indeterminate_call_so_ledger_resolve_still_finds_it(
    make_runtime: Callable[..., Runtime], counter_file: Path
) -> None:
    from openexec_mcp.core.action import ActionRequest
    from openexec_mcp.core.canonical import canonicalize
    from openexec_mcp.core.clock import format_timestamp
    from openexec_mcp.gate.pipeline import AUTO_APPROVAL
    from openexec_mcp.ledger.resolve import resolve_indeterminate
    from openexec_mcp.store.base import NonceClaim

    crashed = make_runtime()
    call = ActionRequest("count", {"label": "x"}, "nonce-0001")
    crashed.store.claim_nonce(
        NonceClaim(
            tenant_id="default",
            nonce="nonce-0001",
            action="count",
            action_hash=call.action_hash(),
            exec_id="e" * 32,
            run_id="run-1",
            approval=canonicalize(dict(AUTO_APPROVAL)).decode(),
            started_at=format_timestamp(utc_now()),
            request=call.canonical_bytes().decode(),
        )
    )
    crashed.close()  # died holding the claim: the next start records it indeterminate
    runtime = make_runtime()
    clock = Clock(utc_now() + timedelta(days=30))  # a month of hourly sweeps later
    assert sweeper_with_clock(runtime, clock).sweep() == 0

    record = runtime.store.get_nonce_by_exec_id("e" * 32)
    assert record is not None and record.state == "indeterminate"
    retry = await runtime.gate.call("count", {"label": "x", "nonce": "nonce-0001"}, CTX)
    assert retry.envelope["error"]["code"] == "outcome_unknown"  # its nonce is still taken
    resolution = await resolve_indeterminate(runtime.gate, "e" * 32, "mark_failed")
    assert (resolution.status, resolution.original_exec_id) == ("failed", "e" * 32)
    assert executions(counter_file) == 0
