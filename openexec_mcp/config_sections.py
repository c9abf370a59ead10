"""The tables of the configuration file, one pydantic model each (SPEC §9): what a value may be.

Every table forbids unknown keys and is frozen; bounds are ``Field`` constraints and rules inside
one table are validators here (a listed built-in needs its table, HMAC secrets of at least
:data:`HMAC_MIN_SECRET_BYTES`, RFC 3339 key windows, SHA-256 token digests). Rules across tables
and where values come from are :class:`~openexec_mcp.config.Settings`'s. Import these names from
:mod:`openexec_mcp.config`; the built-ins' and the upstreams' tables live beside their code
(:mod:`openexec_mcp.builtins.config`, :mod:`openexec_mcp.upstream.config`).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from openexec_mcp.builtins.config import HttpRequestSettings, SendEmailSettings
from openexec_mcp.core.clock import parse_rfc3339
from openexec_mcp.errors import MalformedInputError

__all__ = [
    "HMAC_MIN_SECRET_BYTES",
    "ActionPolicySettings",
    "ActionsSettings",
    "ApprovalKeySettings",
    "ApprovalPolicy",
    "ApprovalsSettings",
    "AuthSettings",
    "AuthToken",
    "BuiltinName",
    "HttpSettings",
    "LedgerSettings",
    "LimitsSettings",
    "McpSettings",
    "NonceSettings",
    "PolicyRuleSettings",
    "PolicySettings",
    "StorageSettings",
    "WitnessSettings",
]

HMAC_MIN_SECRET_BYTES = 32
"""Shortest HMAC approval secret, in bytes (SPEC §5; the same bound as the keyring's)."""

ApprovalPolicy = Literal["auto", "signed", "elicit", "deny"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageSettings(_Section):
    """``[storage]``: where the nonce table and the ledger live."""

    url: str | None = None
    """``sqlite:///relative/path``, ``sqlite:////absolute/path`` or ``postgresql://...``;
    default ``openexec.db`` in ``state_dir``."""
    sqlite_synchronous: Literal["full", "normal"] = "full"
    """``full``: a claim survives power loss before the handler runs. ``normal``: survives a
    process crash, may lose the last commits on power loss."""


BuiltinName = Literal["http_request", "send_email"]


class ActionsSettings(_Section):
    """``[actions]``: extra modules that register actions when imported, and the opt-in built-ins."""

    modules: list[str] = Field(default_factory=list[str])
    builtins: list[BuiltinName] = Field(default_factory=list[BuiltinName])
    """The real actions of SPEC §12 to register; each needs its table below."""
    http_request: HttpRequestSettings | None = None
    send_email: SendEmailSettings | None = None

    @model_validator(mode="after")
    def _tables_match_builtins(self) -> ActionsSettings:
        # Fail closed both ways: a listed action without its table has no allow list, and a table
        # that is not listed is an operator believing an action is configured that is not served.
        for name in ("http_request", "send_email"):
            table = getattr(self, name)
            if name in self.builtins and table is None:
                raise ValueError(f"actions.builtins lists {name!r} but the [actions.{name}] table is missing")
            if table is not None and name not in self.builtins:
                raise ValueError(f"[actions.{name}] is configured but {name!r} is not in actions.builtins")
        return self


class ActionPolicySettings(_Section):
    """``[policy.actions.NAME]``: a per-action override of the mode's default approval policy."""

    approval: ApprovalPolicy


class PolicyRuleSettings(_Section):
    """``[[policy.rules]]`` (SPEC §11): the first rule whose ``actions`` and ``when`` match decides."""

    actions: list[str] = Field(min_length=1)
    """fnmatch patterns over advertised action names (``fs.read_*``)."""
    when: str | None = None
    """A CEL expression over ``args``, ``action`` and ``tenant_id``; it must yield a bool."""
    approval: ApprovalPolicy


class PolicySettings(_Section):
    """``[policy]``."""

    actions: dict[str, ActionPolicySettings] = Field(default_factory=dict[str, ActionPolicySettings])
    rules: list[PolicyRuleSettings] = Field(default_factory=list[PolicyRuleSettings])


class LimitsSettings(_Section):
    """``[limits]``: ingress and output limits (SPEC §2)."""

    max_payload_bytes: int = Field(default=65536, ge=64, le=16 * 1024 * 1024)
    """Maximum canonical size of a payload, in bytes."""
    max_depth: int = Field(default=32, ge=1, le=256)
    """Maximum JSON nesting depth of a payload, in containers."""
    max_result_bytes: int = Field(default=1024 * 1024, ge=64, le=64 * 1024 * 1024)
    """Maximum canonical size of a handler result, in bytes; larger results are ``invalid_result``."""
    handler_timeout_seconds: int = Field(default=300, ge=1, le=86400)
    """A handler running longer is abandoned and the call recorded ``failed`` / ``handler_timeout``.
    Async handlers are cancelled; a sync handler's thread cannot be stopped and may still finish."""
    rate_limit_per_second: float = Field(default=0, ge=0, le=1e6)
    """Calls per second allowed per tenant in this process (token bucket); 0 turns it off."""
    rate_limit_burst: int = Field(default=50, ge=1, le=1_000_000)
    """Bucket size: calls a tenant may make at once before the rate applies."""
    handler_concurrency: int = Field(default=16, ge=1, le=1024)
    """Calls of one action whose handler may run at once in this process, counting sync handler
    threads abandoned after a timeout until they end; past it, calls are refused at admission with
    ``action_saturated`` (nothing recorded). Sync handlers run on a thread limiter of their own,
    never on the one store I/O uses."""


class NonceSettings(_Section):
    """``[nonce]``: nonce record retention (SPEC §4)."""

    retention_seconds: int = Field(default=86400, ge=60)


class ApprovalKeySettings(_Section):
    """``[[approvals.keys]]``: one keyring entry (SPEC §5)."""

    kid: str = Field(min_length=1, max_length=128)
    alg: Literal["ed25519", "hmac-sha256"]
    public_key: str | None = None
    """Ed25519 only: PEM, or base64 of the raw 32 bytes."""
    secret: SecretStr | None = None
    """HMAC only: the shared secret (its UTF-8 bytes are the key)."""
    issuers: list[str] = Field(default_factory=list[str])
    not_before: datetime | None = None
    not_after: datetime | None = None
    revoked: bool = False

    @field_validator("not_before", "not_after", mode="before")
    @classmethod
    def _rfc3339(cls, value: Any) -> Any:
        # One parser for every timestamp (core.clock): RFC 3339 with Z or an offset. TOML's own
        # offset date-times arrive as aware datetimes; naive ones and numbers are refused.
        if value is None:
            return None
        if isinstance(value, str):
            try:
                return parse_rfc3339(value)
            except MalformedInputError as exc:
                raise ValueError(exc.message) from None
        if isinstance(value, datetime) and value.utcoffset() is not None:
            return value
        raise ValueError("expected an RFC 3339 timestamp with 'Z' or an offset, e.g. 2026-11-21T10:00:00Z")

    @field_validator("secret")
    @classmethod
    def _secret_long_enough(cls, secret: SecretStr | None) -> SecretStr | None:
        # A short shared secret is brute-forced online by any caller that may execute: each guess
        # is one call answered approval_bad_signature. The length, never the value, is reported.
        if secret is not None and len(secret.get_secret_value().encode("utf-8")) < HMAC_MIN_SECRET_BYTES:
            raise ValueError(f"an HMAC secret needs at least {HMAC_MIN_SECRET_BYTES} bytes")
        return secret


class ApprovalsSettings(_Section):
    """``[approvals]``: artifact verification (SPEC §5)."""

    clock_skew_seconds: int = Field(default=60, ge=0, le=3600)
    max_ttl_seconds: int = Field(default=300, ge=1, le=86400)
    max_pending_per_tenant: int = Field(default=100, ge=1, le=100000)
    """Pending inbox requests kept per tenant; a new one closes that tenant's oldest (issue 9)."""
    max_grant_ttl_seconds: int = Field(default=28800, ge=1, le=2592000)
    """Longest accepted grant lifetime (``expires_at - issued_at``), in seconds (SPEC §13)."""
    keys: list[ApprovalKeySettings] = Field(default_factory=list[ApprovalKeySettings])


class McpSettings(_Section):
    """``[mcp]``: protocol settings shared by replicas."""

    request_state_keys: list[SecretStr] = Field(default_factory=list[SecretStr])
    """Keys (at least 32 characters each) sealing the 2026-07-28 ``requestState`` of an
    ``input_required`` round, so the retry may land on another replica. The first key seals,
    every key unseals (rotation). Empty: a random per-process key (one replica only)."""
    request_state_ttl_seconds: int = Field(default=600, ge=10, le=86400)
    """How long a sealed ``requestState`` stays valid, in seconds."""
    shutdown_grace_seconds: int = Field(default=30, ge=0, le=3600)
    """On SIGTERM, in-flight calls get this long to finish before the process exits, in seconds."""
    max_sessions: int = Field(default=10_000, ge=1, le=1_000_000)
    """Streamable-HTTP sessions open at once, all tenants together (handshake era)."""
    max_sessions_per_tenant: int = Field(default=100, ge=1, le=1_000_000)
    """Sessions one tenant (one token's ``tenant_id``) may hold open at once; more answer 503."""
    session_idle_seconds: int = Field(default=1800, ge=10, le=86400)
    """A session with no request in flight for this long is closed, in seconds."""

    @field_validator("request_state_keys")
    @classmethod
    def _long_enough(cls, keys: list[SecretStr]) -> list[SecretStr]:
        if any(len(key.get_secret_value().encode("utf-8")) < 32 for key in keys):
            raise ValueError("each request-state key needs at least 32 bytes")
        return keys


class HttpSettings(_Section):
    """``[http]``: the HTTP listener (SPEC §8)."""

    request_read_timeout_seconds: float = Field(default=30, gt=0, le=3600)
    """A request whose headers and body have not all arrived this long after it began (or after
    the previous answer on the connection) is closed, in seconds."""
    keep_alive_seconds: float = Field(default=5, gt=0, le=3600)
    """An idle keep-alive connection is closed after this long, in seconds."""
    rate_limit_per_second: float | None = Field(default=None, ge=0, le=1e6)
    """Requests per second per tenant (per client address without tokens) on the read and
    approval routes; ``None``: ``limits.rate_limit_per_second``; 0 turns it off."""
    rate_limit_burst: int | None = Field(default=None, ge=1, le=1_000_000)
    """Requests allowed at once on those routes; ``None``: ``limits.rate_limit_burst``."""


class WitnessSettings(_Section):
    """``[[ledger.witnesses]]``: a C2SP witness that cosigns the ledger's checkpoints (SPEC §14)."""

    name: str = Field(min_length=1, max_length=256, pattern=r"^[^\s+]+$")
    """The witness key name, as in its cosignature lines."""
    url: str = Field(pattern=r"^https?://")
    """Its submission prefix: checkpoints go to ``POST <url>/add-checkpoint``."""
    public_key: str
    """Its Ed25519 public key: base64 of the raw 32 bytes, or its vkey."""


class LedgerSettings(_Section):
    """``[ledger]``: witnessing of the ledger's checkpoints (SPEC §14)."""

    witnesses: list[WitnessSettings] = Field(default_factory=list[WitnessSettings])
    witness_quorum: int | None = Field(default=None, ge=1)
    """Cosignatures a checkpoint needs to count as witnessed; default: every witness."""
    witness_interval_seconds: float = Field(default=1.0, ge=0.05, le=3600)
    """Shortest time between two submissions to one witness, in seconds."""


class AuthToken(_Section):
    """``[[auth.tokens]]``: a bearer token, stored only as its SHA-256 (SPEC §8)."""

    sha256: str
    tenant_id: str = Field(min_length=1, max_length=128)
    scopes: list[Literal["execute", "approve", "read"]] = Field(default_factory=lambda: ["execute", "read"])

    @field_validator("sha256")
    @classmethod
    def _hex64(cls, value: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", value):
            raise ValueError("must be the SHA-256 of the token as 64 lowercase hex characters")
        return value


class AuthSettings(_Section):
    """``[auth]``."""

    tokens: list[AuthToken] = Field(default_factory=list[AuthToken])
