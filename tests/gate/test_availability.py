"""Availability attacks on the handler runner (issue 9): slow sync handlers and abandoned threads.

A tenant's slow sync handlers must not starve the store I/O that every other call needs, and
handlers abandoned after their timeout must not grow the process's threads without bound.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from openexec_mcp import action
from openexec_mcp.gate.pipeline import Answer, CallContext, GateAnswer
from openexec_mcp.runtime import Runtime

pytestmark = pytest.mark.anyio

TENANT_A = CallContext(tenant_id="tenant-a", run_id="run-a")
TENANT_B = CallContext(tenant_id="tenant-b", run_id="run-b")


class Label(BaseModel):
    label: str


def status(answer: GateAnswer) -> tuple[str, str | None]:
    assert isinstance(answer, Answer)
    error = answer.envelope["error"]
    return answer.status, None if error is None else error["code"]


async def test_forty_slow_sync_handlers_of_one_tenant_do_not_starve_other_tenants_calls(
    make_runtime: Callable[..., Runtime],
) -> None:
    release = threading.Event()
    started = threading.Semaphore(0)

    @action(name="slow")
    def slow(payload: Label) -> dict[str, Any]:
        started.release()
        release.wait(60)
        return {"label": payload.label}

    @action(name="quick")
    def quick(payload: Label) -> dict[str, Any]:
        return {"label": payload.label}

    # More slow calls than anyio's default thread limiter (40 tokens), all within the action's own bound.
    runtime = make_runtime(registry_actions=[slow, quick], limits={"handler_concurrency": 64})
    results: list[GateAnswer] = []
    try:
        async with anyio.create_task_group() as tasks:

            async def call_slow(n: int) -> None:
                results.append(await runtime.gate.call("slow", {"label": str(n), "nonce": f"nonce-slow-{n:04d}"}, TENANT_A))

            for n in range(45):
                tasks.start_soon(call_slow, n)
            with anyio.fail_after(30):
                for _ in range(45):  # every slow handler holds its thread now
                    await anyio.to_thread.run_sync(started.acquire)
            # Another tenant's call needs the store (claim, outcome, receipt) and a thread of its own.
            with anyio.fail_after(10):
                other = await runtime.gate.call("quick", {"label": "b", "nonce": "nonce-quick-0001"}, TENANT_B)
            assert status(other) == ("executed", None)
            release.set()
    finally:
        release.set()
    assert sorted(status(answer) for answer in results) == [("executed", None)] * 45


async def test_waves_of_timed_out_sync_handlers_cannot_grow_threads_without_bound(
    make_runtime: Callable[..., Runtime],
) -> None:
    release = threading.Event()

    @action(name="stuck")
    def stuck(payload: Label) -> dict[str, Any]:
        release.wait(60)  # outlives its timeout: the thread is abandoned, not stopped
        return {"label": payload.label}

    capacity = 4
    runtime = make_runtime(
        registry_actions=[stuck], limits={"handler_concurrency": capacity, "handler_timeout_seconds": 1}
    )
    codes: list[tuple[str, str | None]] = []
    try:
        for wave in range(3):
            async with anyio.create_task_group() as tasks:

                async def call(n: int, wave: int = wave) -> None:
                    answer = await runtime.gate.call("stuck", {"label": "x", "nonce": f"nonce-w{wave}-{n:04d}"}, TENANT_A)
                    codes.append(status(answer))

                for n in range(10):
                    tasks.start_soon(call, n)
        # At most `capacity` handler threads exist however many waves came (30 calls, 3 timeouts each).
        handler_threads = [t for t in threading.enumerate() if t.name == "openexec-handler-stuck"]
        assert 1 <= len(handler_threads) <= capacity
        assert ("denied", "action_saturated") in codes
        assert codes.count(("failed", "handler_timeout")) <= capacity * 3
    finally:
        release.set()
