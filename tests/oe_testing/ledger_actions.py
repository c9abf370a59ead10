"""A read-only action whose result depends on the world, for ``ledger replay`` tests.

Load with ``actions.modules = ["oe_testing.actions", "oe_testing.ledger_actions"]``.
``executions_seen`` reads the counter file of ``oe_testing.actions.count``: replaying it after
another ``count`` gives a different result, as a non-deterministic "read-only" action would.
"""

from __future__ import annotations

from pydantic import BaseModel

from oe_testing.actions import CountOut, executions
from openexec_mcp import action


class Nothing(BaseModel):
    pass


@action(name="executions_seen", title="Read the counter", read_only=True, destructive=False, idempotent=True)
def executions_seen(payload: Nothing) -> CountOut:
    """Return how many ``count`` executions the counter file records."""
    return CountOut(executions=executions())
