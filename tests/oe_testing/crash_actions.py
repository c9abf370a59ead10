"""Actions for the crash, drain and race tests. Load with ``oe_testing.crash_actions``.

Kept apart from ``oe_testing.actions`` so the tool lists other tests pin stay as they are. Every
execution appends one line to ``$OPENEXEC_TEST_COUNTER`` (as ``count`` does), so a test counts
real executions on disk, across process deaths.
"""

from __future__ import annotations

from pathlib import Path

import anyio
from pydantic import BaseModel

from oe_testing import actions as base
from oe_testing.actions import CountIn, CountOut
from openexec_mcp import action
from openexec_mcp.faults import unsafe_fault_point


@action(
    name="upsert_then_crash",
    title="Idempotent write, then the in_handler fault point",
    destructive=False,
    idempotent=True,
)
def upsert_then_crash(payload: CountIn) -> CountOut:
    """An idempotent action (safe to re-run by an operator): record one execution, then die if armed."""
    result = base.count.handler(payload)
    unsafe_fault_point("in_handler")
    return result


class HoldIn(BaseModel):
    release: str
    """A path: the handler returns once this file exists (at most 60 s)."""


@action(name="hold", title="Run until released", destructive=False)
async def hold(payload: HoldIn) -> dict[str, bool]:
    """Record one execution, then wait until the release file exists: an in-flight call on demand."""
    base.count.handler(CountIn(label="hold"))
    release = Path(payload.release)
    with anyio.fail_after(60):
        while not release.exists():
            await anyio.sleep(0.01)
    return {"released": True}


@action(name="count_read", title="A read that the test counts", read_only=True, destructive=False, idempotent=True)
def count_read(payload: CountIn) -> CountOut:
    """Declared ``read_only`` (one commit, after the handler); appends to the counter only so a test sees each run."""
    return base.count.handler(payload)
