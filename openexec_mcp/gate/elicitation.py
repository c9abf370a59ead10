"""Elicitation, the approval source that asks the user through the MCP client (SPEC §5, source 4).

The transport implements :class:`Elicitor` over its client channel; the approval step
(:mod:`.approvals`) asks it with the prompt of :func:`elicitation_prompt` and the form
:data:`APPROVAL_SCHEMA`. A prompt too long to show whole is never shown cut: the call is not
elicited and needs a signed approval instead. :class:`InputRequired` is the decision of a client
that answers in a retry of the same call (2026-07-28 ``input_required``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from openexec_mcp.core.display import render_action_request

__all__ = [
    "APPROVAL_SCHEMA",
    "ELICIT_MAX_CHARS",
    "ELICIT_MAX_VALUE_CHARS",
    "ElicitOutcome",
    "Elicitor",
    "InputRequired",
    "elicitation_prompt",
]

APPROVAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"approve": {"type": "boolean", "title": "Approve this exact action"}},
    "required": ["approve"],
}
"""The elicitation form: one boolean, true to approve."""

ELICIT_MAX_VALUE_CHARS = 200
"""Longer string values (and keys) are elided in the elicitation prompt, visibly, with a count."""
ELICIT_MAX_CHARS = 4000
"""A call whose prompt would be longer is not elicited (``approval_required``): never a cut list."""

ElicitOutcome = Literal["accept", "decline", "cancel", "unsupported", "input_required"]


class Elicitor(Protocol):
    """Asks the user to confirm one call through the MCP client (transport-specific)."""

    async def confirm(self, message: str, action_hash: str) -> ElicitOutcome:
        """Return the user's answer for one call.

        ``unsupported`` when the client cannot elicit; ``input_required`` when the answer must
        come in a retry of the same call (2026-07-28).
        """
        ...


@dataclass(frozen=True, slots=True)
class InputRequired:
    """The answer must come in a retry of the same call (2026-07-28 ``input_required``)."""

    message: str
    action_hash: str


def elicitation_prompt(action_request: Mapping[str, Any], action_hash: str) -> str | None:
    """Return the text that shows the user one call (SPEC §3 action request and its hash), or ``None``.

    ``None`` when the whole call does not fit :data:`ELICIT_MAX_CHARS` characters, with string
    values and keys over :data:`ELICIT_MAX_VALUE_CHARS` elided visibly.
    """
    return render_action_request(
        action_request, action_hash, max_value_chars=ELICIT_MAX_VALUE_CHARS, max_chars=ELICIT_MAX_CHARS
    )
