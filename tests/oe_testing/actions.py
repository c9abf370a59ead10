"""Side-effecting actions for tests. Load with ``actions.modules = ["oe_testing.actions"]``.

``count`` appends one line per execution to the file named by ``$OPENEXEC_TEST_COUNTER``, so
tests (and server subprocesses) can count real executions on disk.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

from openexec_mcp import action


class CountIn(BaseModel):
    label: str = "x"


class CountOut(BaseModel):
    executions: int


def counter_path() -> Path:
    return Path(os.environ["OPENEXEC_TEST_COUNTER"])


def executions(path: Path | None = None) -> int:
    target = path or counter_path()
    return len(target.read_text().splitlines()) if target.exists() else 0


@action(name="count", title="Count executions", read_only=False, destructive=False, idempotent=False)
def count(payload: CountIn) -> CountOut:
    """Append one line to the counter file and return how many executions it has seen."""
    path = counter_path()
    with path.open("a") as handle:
        handle.write(payload.label + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return CountOut(executions=executions(path))


class Nothing(BaseModel):
    pass


@action(name="boom", title="Always raises", destructive=False)
def boom(payload: Nothing) -> CountOut:
    """Raise an exception whose text must never reach the client."""
    raise RuntimeError("secret internal detail")


@action(name="not_json", title="Returns a non-JSON value", destructive=False)
def not_json(payload: Nothing) -> object:
    """Return a set, which is not JSON."""
    return {1, 2}


@action(name="count_then_crash", title="Count, then hit the in_handler fault point", destructive=False)
def count_then_crash(payload: CountIn) -> CountOut:
    """Record one execution, then die if the ``in_handler`` fault point is armed."""
    from openexec_mcp.faults import unsafe_fault_point

    result = count.handler(payload)
    unsafe_fault_point("in_handler")
    return result
