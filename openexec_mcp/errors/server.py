"""The server cannot take the call now, or cannot start: nothing ran and nothing is recorded.

Rate limits and saturation (429), draining and store outages (503), a 2026-07-28 retry of an
input round that is not open here (410), and an invalid
configuration (CLI exit code 2). Import these from :mod:`openexec_mcp.errors`.
"""

from __future__ import annotations

from openexec_mcp.errors.base import OpenExecError

__all__ = [
    "ActionSaturatedError",
    "ConfigError",
    "InputRoundExpiredError",
    "RateLimitedError",
    "ShuttingDownError",
    "StoreUnavailableError",
]


class RateLimitedError(OpenExecError):
    """The tenant exceeded ``limits.rate_limit_per_second``; retry later.

    Nothing is recorded, so a flood of calls cannot flood the ledger.
    """

    code = "rate_limited"
    http_status = 429


class ActionSaturatedError(OpenExecError):
    """Every worker of this action is busy (or abandoned after a timeout); retry later.

    Refused at admission: nothing is recorded and the nonce stays free.
    """

    code = "action_saturated"
    http_status = 429


class ShuttingDownError(OpenExecError):
    """The server is draining before it exits; nothing ran. Retry on another replica or later."""

    code = "shutting_down"
    http_status = 503


class InputRoundExpiredError(OpenExecError):
    """A 2026-07-28 retry names an upstream's ``input_required`` round that is not open here (SPEC §11).

    The round expired (answered ``cancel`` to the upstream), was answered already, or is parked in
    another server process. Nothing ran for this retry and nothing was recorded for it; the parked
    call itself finished with its own receipt, which a new call with the same nonce replays.
    """

    code = "input_round_expired"
    http_status = 410


class StoreUnavailableError(OpenExecError):
    """The store did not answer; nothing ran."""

    code = "store_unavailable"
    http_status = 503


class ConfigError(OpenExecError):
    """The configuration is invalid; the server refuses to start (CLI exit code 2)."""

    code = "config_error"
