"""A side-effecting twin of ``echo`` for the benchmarks: same payload and result, declared ``read_only=False``.

The gate then keeps the durable nonce claim before the handler (SPEC §4): two commits per call,
where a ``read_only`` action needs one. Loaded by the benchmark through
``OPENEXEC_ACTIONS__MODULES='["bench.side_effect_action"]'``.
"""

from __future__ import annotations

from actions.echo import EchoIn, EchoOut
from openexec_mcp import action


@action(
    name="echo_write",
    title="Echo (declared side-effecting)",
    read_only=False,
    destructive=False,
    idempotent=True,
    open_world=False,
)
async def echo_write(payload: EchoIn) -> EchoOut:
    """Return the payload unchanged, as ``echo`` does; the gate treats it as a side effect."""
    return EchoOut(echo=payload.model_dump(mode="json"))
