"""What the gate takes from a transport and what it gives back (SPEC §5, §6).

:class:`CallContext` is who is calling, as the transport established it; :data:`GateAnswer` is
what :meth:`~openexec_mcp.gate.pipeline.Gate.call` returns: an :class:`Answer` (the result
envelope) or :class:`NeedsInput` (the user's confirmation must come in a retry of the call).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from openexec_mcp.errors import OpenExecError
from openexec_mcp.gate.elicitation import Elicitor, InputRequired

__all__ = ["Answer", "CallContext", "GateAnswer", "NeedsInput"]


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is calling, as established by the transport (trusted), and what came beside the arguments.

    Attributes:
        tenant_id: The tenant: from the bearer token, else the configured ``tenant_id``.
        run_id: The run this call belongs to (SPEC §7).
        approval_artifact: The untrusted approval artifact that came with the call, if any.
        elicitor: The client's elicitation channel, if the transport has one.
        meta_nonce: The untrusted ``_meta["dev.openexec/nonce"]`` of the request, if any (SPEC §11).
    """

    tenant_id: str
    run_id: str
    approval_artifact: Any = None
    elicitor: Elicitor | None = None
    meta_nonce: Any = None


@dataclass(frozen=True, slots=True)
class Answer:
    """The gate's answer: the result envelope of SPEC §6 and the error that decided it, if any.

    Attributes:
        envelope: The JSON object sent to the client (``status`` always set).
        error: The refusal or failure, or ``None`` when executed or replayed.
    """

    envelope: dict[str, Any]
    error: OpenExecError | None

    @property
    def status(self) -> str:
        """``executed``, ``replayed``, ``failed``, ``denied`` or ``indeterminate``."""
        return str(self.envelope["status"])


@dataclass(frozen=True, slots=True)
class NeedsInput:
    """The user's confirmation must come in a retry of the same call (2026-07-28 elicitation).

    Nothing was recorded; the nonce is still free. It has no envelope: the transport answers
    with an ``input_required`` result instead (SPEC §5, source 4).

    Attributes:
        input_required: The question to ask and the action_hash it is bound to.
        status: Always ``input_required``.
        error: Always ``None``.
    """

    input_required: InputRequired
    status: str = "input_required"
    error: None = None

    @property
    def envelope(self) -> dict[str, Any]:
        """Raise :class:`TypeError`: a call waiting for the user's input has no result envelope yet."""
        raise TypeError("the call waits for the user's input (input_required); it has no envelope yet")


GateAnswer = Answer | NeedsInput
"""What :meth:`~openexec_mcp.gate.pipeline.Gate.call` returns."""
