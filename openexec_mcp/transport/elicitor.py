"""The approval confirmation by MCP elicitation, in both protocol eras (SPEC §5, source 4)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from mcp_types import (
    CallToolRequestParams,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    InputRequiredResult,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from openexec_mcp.gate.approvals import APPROVAL_SCHEMA, ElicitOutcome, InputRequired

__all__ = ["ELICITATION_KEY", "McpElicitor", "approval_input_required"]

logger = logging.getLogger("openexec_mcp.transport.mcp")

ELICITATION_KEY = "dev.openexec/approval"
"""The ``input_requests`` key of the approval question (2026-07-28)."""


class McpElicitor:
    """Asks the user to confirm a call through MCP elicitation (SPEC §5, source 4).

    Handshake era (2025-11-25 and earlier): a form ``elicitation/create`` request on the call's own
    channel, if the client declared the elicitation capability. 2026-07-28: no server-to-client
    requests, so the first round answers ``input_required`` with the form and the action_hash as
    ``requestState`` (sealed by the SDK, bound to this tool and these arguments); the client's retry
    carries the answer. That retry is a continuation of the same call, not a replay: nothing was
    recorded in the first round, the nonce is still free.
    """

    def __init__(self, params: CallToolRequestParams, ctx: Any) -> None:
        self._params = params
        self._ctx = ctx

    async def confirm(self, message: str, action_hash: str) -> ElicitOutcome:
        """Return ``accept`` only for an explicit ``approve: true``; see :class:`Elicitor`."""
        capabilities = self._ctx.session.client_capabilities
        if capabilities is None or capabilities.elicitation is None:
            return "unsupported"
        if self._ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            responses = self._params.input_responses or {}
            response = responses.get(ELICITATION_KEY)
            if response is None:
                return "input_required"
            if self._params.request_state != action_hash or not isinstance(response, ElicitResult):
                return "decline"  # an answer for another call, or not an elicitation answer
            return _outcome(response)
        try:
            result = await self._ctx.session.elicit_form(
                message, APPROVAL_SCHEMA, related_request_id=self._ctx.request_id
            )
        except Exception:
            logger.warning("elicitation failed; treating as unsupported", exc_info=True)
            return "unsupported"
        return _outcome(result)


def _outcome(result: ElicitResult) -> ElicitOutcome:
    if result.action != "accept":
        return result.action
    content: Mapping[str, Any] = result.content or {}
    return "accept" if content.get("approve") is True else "decline"


def approval_input_required(pending: InputRequired) -> InputRequiredResult:
    """Return the ``input_required`` result of the approval question: its form, the action_hash as state."""
    request = ElicitRequest(params=ElicitRequestFormParams(message=pending.message, requested_schema=APPROVAL_SCHEMA))
    return InputRequiredResult(input_requests={ELICITATION_KEY: request}, request_state=pending.action_hash)
