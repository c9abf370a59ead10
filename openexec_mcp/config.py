"""Settings: one pydantic-settings model fed by a TOML file and environment variables (SPEC §9).

Sources, highest precedence first, each a pydantic-settings source:

1. explicit overrides (CLI flags: the init arguments);
2. ``OPENEXEC_*`` environment variables, nested with ``__`` (``OPENEXEC_STORAGE__URL``);
3. the seed's ``CLAWSHIELD_*`` variables (:class:`ClawshieldEnvSource`);
4. the TOML file (``--config FILE`` or ``OPENEXEC_CONFIG``), named by the ``config_file`` init
   argument, so no state lives outside one ``Settings(...)`` call;
5. defaults.

Unknown keys are errors, so a typo never silently weakens the policy. Rules across tables (SPEC
§4: ``nonce.retention_seconds > approvals.max_ttl_seconds + 2 × clock_skew_seconds``; SPEC §5:
HMAC secrets of at least 32 bytes) are start-up errors too. ``config.example.toml`` documents
every key.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from openexec_mcp.builtins.config import HttpRequestSettings, SendEmailSettings
from openexec_mcp.core.clock import parse_rfc3339
from openexec_mcp.errors import ConfigError, MalformedInputError
from openexec_mcp.upstream.config import UpstreamSettings

__all__ = [
    "HMAC_MIN_SECRET_BYTES",
    "ApprovalKeySettings",
    "AuthToken",
    "ClawshieldEnvSource",
    "Settings",
    "default_state_dir",
    "load_settings",
]

HMAC_MIN_SECRET_BYTES = 32
"""Shortest HMAC approval secret, in bytes (SPEC §5; the same bound as the keyring's)."""

ApprovalPolicy = Literal["auto", "signed", "elicit", "deny"]


def default_state_dir() -> Path:
    """Return ``$XDG_STATE_HOME/openexec-mcp`` (``~/.local/state/openexec-mcp`` when unset)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "openexec-mcp"


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


class Settings(BaseSettings):
    """The whole configuration of one server process (SPEC §9)."""

    model_config = SettingsConfigDict(env_prefix="OPENEXEC_", env_nested_delimiter="__", extra="forbid", frozen=True)

    mode: Literal["demo", "clawshield"] = "demo"
    server_id: str = Field(default="openexec-mcp", pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
    """The ledger origin (checkpoint name, receipts' ``log_id``) and the approval audience."""
    tenant_id: str = Field(default="default", min_length=1, max_length=128)
    """The tenant of stdio callers, and of HTTP callers when no tokens are configured."""
    state_dir: Path = Field(default_factory=default_state_dir)
    storage: StorageSettings = StorageSettings()
    actions: ActionsSettings = ActionsSettings()
    policy: PolicySettings = PolicySettings()
    toolsets: dict[str, list[str]] = Field(default_factory=dict[str, list[str]])
    limits: LimitsSettings = LimitsSettings()
    nonce: NonceSettings = NonceSettings()
    approvals: ApprovalsSettings = ApprovalsSettings()
    auth: AuthSettings = AuthSettings()
    mcp: McpSettings = McpSettings()
    http: HttpSettings = HttpSettings()
    ledger: LedgerSettings = LedgerSettings()
    governance: dict[str, Any] = Field(default_factory=dict[str, Any])
    """``[governance]``: read only by ``openexec-mcp governance serve`` (SPEC §13); the execution server ignores it."""
    config_file: Path | None = Field(default=None, exclude=True)
    """The TOML file these settings were read from (an init argument, never a TOML key)."""
    upstreams: list[UpstreamSettings] = Field(default_factory=list[UpstreamSettings])
    """``[[upstreams]]``: MCP servers guarded by this one (SPEC §11)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order the sources: overrides, ``OPENEXEC_*``, ``CLAWSHIELD_*``, TOML (module docstring)."""
        init_kwargs: dict[str, Any] = cast("InitSettingsSource", init_settings).init_kwargs  # pyright: ignore[reportUnknownMemberType]
        toml_file: Path | None = init_kwargs.get("config_file")
        toml = TomlConfigSettingsSource(settings_cls, toml_file=toml_file) if toml_file else None
        clawshield = ClawshieldEnvSource(settings_cls, toml)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, clawshield]
        if toml is not None:
            sources.append(toml)
        return tuple(sources)

    @model_validator(mode="after")
    def _retention_outlives_approvals(self) -> Settings:
        # SPEC §4: a nonce record must outlive every approval that could still execute it. An
        # artifact issued up to one skew in the future stays valid until expires_at + skew, so
        # the record must outlast max_ttl + 2 x skew, or a pruned nonce lets the call run again.
        approvals = self.approvals
        needed = approvals.max_ttl_seconds + 2 * approvals.clock_skew_seconds
        if self.nonce.retention_seconds <= needed:
            raise ValueError(
                f"nonce.retention_seconds ({self.nonce.retention_seconds}) must exceed approvals.max_ttl_seconds"
                f" + 2 x approvals.clock_skew_seconds ({needed})"
            )
        return self

    def storage_url(self) -> str:
        """Return ``storage.url``, defaulting to ``openexec.db`` in ``state_dir`` (absolute)."""
        if self.storage.url:
            return self.storage.url
        return "sqlite:///" + str((self.state_dir / "openexec.db").absolute())


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Load settings from a TOML file, the environment and explicit overrides.

    Args:
        config_file: The TOML file; ``None`` uses ``$OPENEXEC_CONFIG`` when set.
        **overrides: Top-level keys that win over every source (CLI flags).

    Returns:
        The frozen settings.

    Raises:
        ConfigError: The file is missing or not TOML, a key is unknown, or a value is invalid. The
            message is one line and names the offending key, never a secret value.
    """
    path = config_file if config_file is not None else os.environ.get("OPENEXEC_CONFIG")
    toml_path = Path(path) if path else None
    if toml_path is not None and not toml_path.is_file():
        raise ConfigError(f"config file not found: {toml_path}")
    try:
        return Settings(**overrides, config_file=toml_path)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None
    except ValueError as exc:  # TOML syntax errors
        raise ConfigError(f"cannot read config file {toml_path}: {exc}") from None


class ClawshieldEnvSource(PydanticBaseSettingsSource):
    """The seed's ``CLAWSHIELD_*`` variables as a settings source (SPEC §9).

    ``CLAWSHIELD_PUBLIC_KEY`` (Ed25519, PEM or raw 32 bytes base64) and ``CLAWSHIELD_SECRET_KEY``
    (HMAC, the UTF-8 bytes of the value, at least 32) each add a keyring entry with kid and issuer
    ``clawshield`` after the TOML file's ``[[approvals.keys]]`` (a key list given by a higher
    source, ``OPENEXEC_APPROVALS__KEYS`` or an explicit override, replaces the whole list, as
    every list does in pydantic-settings); ``CLAWSHIELD_TENANT_ID`` sets ``tenant_id``. A variable
    that is set but empty is a start-up error: in clawshield mode it would otherwise configure no
    key while the operator believes one is set.

    Args:
        settings_cls: The settings class.
        toml: The TOML source whose keys the entries are appended to, or ``None``.

    Raises:
        ConfigError: When called, a ``CLAWSHIELD_*`` variable is set but empty.
    """

    def __init__(self, settings_cls: type[BaseSettings], toml: PydanticBaseSettingsSource | None) -> None:
        super().__init__(settings_cls)
        self._toml = toml

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: :meth:`__call__` builds the whole mapping (pydantic-settings' abstract hook)."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        """Return ``{"tenant_id"?, "approvals"?: {"keys": [...]}}`` from the environment."""
        for name in ("CLAWSHIELD_PUBLIC_KEY", "CLAWSHIELD_SECRET_KEY", "CLAWSHIELD_TENANT_ID"):
            if name in os.environ and not os.environ[name].strip():
                raise ConfigError(f"{name} is set but empty; unset it or give it a value")
        keys: list[dict[str, Any]] = []
        if public_key := os.environ.get("CLAWSHIELD_PUBLIC_KEY"):
            keys.append({"kid": "clawshield", "alg": "ed25519", "public_key": public_key, "issuers": ["clawshield"]})
        if secret := os.environ.get("CLAWSHIELD_SECRET_KEY"):
            if len(secret.encode("utf-8")) < HMAC_MIN_SECRET_BYTES:
                raise ConfigError(f"CLAWSHIELD_SECRET_KEY needs at least {HMAC_MIN_SECRET_BYTES} bytes")
            keys.append({"kid": "clawshield", "alg": "hmac-sha256", "secret": secret, "issuers": ["clawshield"]})
        result: dict[str, Any] = {}
        if keys:
            configured: list[Any] = self._toml().get("approvals", {}).get("keys", []) if self._toml is not None else []
            result["approvals"] = {"keys": [*configured, *keys]}
        if tenant := os.environ.get("CLAWSHIELD_TENANT_ID"):
            result["tenant_id"] = tenant
        return result


def _one_line(exc: ValidationError) -> str:
    error = exc.errors()[0]
    location = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"invalid config: {location + ': ' if location else ''}{message}{more}"
