"""The ``add`` demo action: the sum of two numbers, never a string concatenation."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from openexec_mcp import action


class AddIn(BaseModel):
    """Two JSON numbers. Strings are refused by validation (strict mode), never coerced."""

    model_config = ConfigDict(strict=True)

    a: int | float
    b: int | float


class AddOut(BaseModel):
    """``{"sum": a + b}``."""

    sum: int | float


@action(name="add", title="Add two numbers", read_only=True, destructive=False, idempotent=True, open_world=False)
def add(payload: AddIn) -> AddOut:
    """Return ``{"sum": a + b}`` for two numbers ``a`` and ``b``."""
    return AddOut(sum=payload.a + payload.b)
