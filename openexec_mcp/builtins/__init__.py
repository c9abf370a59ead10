"""Opt-in real actions: ``http_request`` and ``send_email`` (SPEC §12).

``[actions] builtins = ["http_request", "send_email"]`` registers them, each configured by its
table (:mod:`openexec_mcp.builtins.config`). :func:`build_builtin_actions` turns the settings
into :class:`~openexec_mcp.registry.Action` objects whose handlers close over the frozen config
and whose ``precheck`` the gate runs before approval (SPEC §12: refused → ``denied`` with a
receipt, nothing sent).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from openexec_mcp.errors import ConfigError
from openexec_mcp.registry import Action

if TYPE_CHECKING:
    from openexec_mcp.config import Settings

__all__ = ["build_builtin_actions"]

# Room left in limits.max_result_bytes for the status and headers of an http_request result.
_HEADER_ROOM_BYTES = 65536


def build_builtin_actions(settings: Settings) -> list[Action]:
    """Build the real actions listed in ``actions.builtins``.

    Raises:
        ConfigError: A table is inconsistent with the limits (an answer that could not be
            recorded, a timeout beyond the handler timeout), or an ``env:NAME`` is unset.
    """
    actions: list[Action] = []
    handler_timeout = settings.limits.handler_timeout_seconds
    if "http_request" in settings.actions.builtins and settings.actions.http_request is not None:
        from openexec_mcp.builtins.http_request import (
            HttpRequestIn,
            HttpResponseOut,
            build_http_policy,
            send_http_request,
        )

        table = settings.actions.http_request
        if -(-table.max_response_bytes // 3) * 4 + _HEADER_ROOM_BYTES > settings.limits.max_result_bytes:
            raise ConfigError(
                "invalid config: actions.http_request.max_response_bytes: in base64 with headers it would exceed "
                "limits.max_result_bytes; lower it or raise the limit"
            )
        _check_timeout("http_request", table.timeout_seconds, handler_timeout)
        http_policy = build_http_policy(table)

        async def http_request(payload: HttpRequestIn) -> HttpResponseOut:
            return await send_http_request(http_policy, payload)

        methods = ", ".join(sorted(http_policy.methods))
        urls = ", ".join(pattern.text for pattern in http_policy.allowed_urls)
        actions.append(
            _action(
                name="http_request",
                title="HTTP request",
                handler=http_request,
                input_model=HttpRequestIn,
                output_model=HttpResponseOut,
                precheck=lambda payload: http_policy.check(payload),
                description=(
                    "Send one HTTP request and return the answer (status, headers, body). "
                    f"Allowed methods: {methods}. Allowed URLs (fnmatch): {urls}. "
                    "Server-held credentials are added by the server; do not send them."
                ),
            )
        )
    if "send_email" in settings.actions.builtins and settings.actions.send_email is not None:
        from openexec_mcp.builtins.send_email import SendEmailIn, SendEmailOut, build_email_policy, send_email_message

        table = settings.actions.send_email
        _check_timeout("send_email", table.timeout_seconds, handler_timeout)
        email_policy = build_email_policy(table)

        async def send_email(payload: SendEmailIn) -> SendEmailOut:
            return await send_email_message(email_policy, payload)

        actions.append(
            _action(
                name="send_email",
                title="Send email",
                handler=send_email,
                input_model=SendEmailIn,
                output_model=SendEmailOut,
                precheck=lambda payload: email_policy.check(payload),
                description=(
                    "Send one plain-text email from the server's configured sender. Allowed recipients "
                    f"(fnmatch): {', '.join(email_policy.allowed_recipients)}. Returns the Message-ID."
                ),
            )
        )
    return actions


def _check_timeout(name: str, timeout_seconds: float, handler_timeout_seconds: int) -> None:
    # The action's own deadline must fire first: it knows whether anything was sent, and so can
    # answer indeterminate or not-sent; the gate's handler timeout can only say "failed".
    if timeout_seconds >= handler_timeout_seconds:
        raise ConfigError(
            f"invalid config: actions.{name}.timeout_seconds must be below limits.handler_timeout_seconds"
        )


def _action(*, precheck: Callable[[Any], object], **fields: Any) -> Action:
    """Build an :class:`Action` with the real actions' annotations (destructive, open world)."""

    def check(payload: Any) -> None:
        precheck(payload)  # the handler checks again before sending (defence in depth)

    return Action(**fields, precheck=check, read_only=False, destructive=True, idempotent=False, open_world=True)
