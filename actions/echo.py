"""The ``echo`` demo action: returns its payload unchanged."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from openexec_mcp import action


class EchoIn(BaseModel):
    """Any JSON object; every property is echoed back."""

    model_config = ConfigDict(extra="allow", title="EchoIn")


class EchoOut(BaseModel):
    """``{"echo": <the payload>}``."""

    echo: dict[str, Any]


@action(name="echo", title="Echo", read_only=True, destructive=False, idempotent=True, open_world=False)
async def echo(payload: EchoIn) -> EchoOut:
    """Return the payload unchanged, as ``{"echo": payload}``. Side-effect free.

    ``async`` because it never blocks: the gate awaits it on the event loop, with no worker thread.
    """
    return EchoOut(echo=payload.model_dump(mode="json"))
