"""Settings: one pydantic-settings model fed by a TOML file and ``OPENEXEC_*`` variables (SPEC §9).

Precedence, highest first: explicit overrides (CLI flags), ``OPENEXEC_*`` environment variables
(nested with ``__``, e.g. ``OPENEXEC_STORAGE__URL``), the seed's ``CLAWSHIELD_*`` variables, the
TOML file (``--config FILE`` or ``OPENEXEC_CONFIG``), then defaults. Unknown keys are errors, so a
typo never silently weakens the policy. ``config.example.toml`` documents every key.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from openexec_mcp.errors import ConfigError

__all__ = ["ApprovalKeySettings", "AuthToken", "Settings", "default_state_dir", "load_settings"]

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


class ActionsSettings(_Section):
    """``[actions]``: extra modules that register actions when imported."""

    modules: list[str] = Field(default_factory=list[str])


class ActionPolicySettings(_Section):
    """``[policy.actions.NAME]``: a per-action override of the mode's default approval policy."""

    approval: ApprovalPolicy


class PolicySettings(_Section):
    """``[policy]``."""

    actions: dict[str, ActionPolicySettings] = Field(default_factory=dict[str, ActionPolicySettings])


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

    @field_validator("request_state_keys")
    @classmethod
    def _long_enough(cls, keys: list[SecretStr]) -> list[SecretStr]:
        if any(len(key.get_secret_value().encode("utf-8")) < 32 for key in keys):
            raise ValueError("each request-state key needs at least 32 bytes")
        return keys


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
    ledger: LedgerSettings = LedgerSettings()
    governance: dict[str, Any] = Field(default_factory=dict[str, Any])
    """``[governance]``: read only by ``openexec-mcp governance serve`` (SPEC §13); the execution server ignores it."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order the sources: overrides, environment, TOML file (see the module docstring)."""
        toml_file = _CONFIG_FILE.get("path")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    def storage_url(self) -> str:
        """Return ``storage.url``, defaulting to ``openexec.db`` in ``state_dir`` (absolute)."""
        if self.storage.url:
            return self.storage.url
        return "sqlite:///" + str((self.state_dir / "openexec.db").absolute())


# pydantic-settings builds sources inside the class; the TOML path is handed over through this
# module-level slot, set only for the duration of one load_settings() call.
_CONFIG_FILE: dict[str, Path | None] = {"path": None}


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
    env_overrides = _clawshield_environment()
    if "tenant_id" in env_overrides and "OPENEXEC_TENANT_ID" not in os.environ:
        overrides.setdefault("tenant_id", env_overrides["tenant_id"])
    _CONFIG_FILE["path"] = toml_path
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None
    except ValueError as exc:  # TOML syntax errors
        raise ConfigError(f"cannot read config file {toml_path}: {exc}") from None
    finally:
        _CONFIG_FILE["path"] = None
    if env_overrides.get("keys"):
        keys = [*settings.approvals.keys, *env_overrides["keys"]]
        settings = settings.model_copy(update={"approvals": settings.approvals.model_copy(update={"keys": keys})})
    return settings


def _clawshield_environment() -> dict[str, Any]:
    """Read the seed's ``CLAWSHIELD_*`` variables (SPEC §9)."""
    result: dict[str, Any] = {}
    keys: list[ApprovalKeySettings] = []
    if public_key := os.environ.get("CLAWSHIELD_PUBLIC_KEY"):
        keys.append(ApprovalKeySettings(kid="clawshield", alg="ed25519", public_key=public_key, issuers=["clawshield"]))
    if secret := os.environ.get("CLAWSHIELD_SECRET_KEY"):
        keys.append(
            ApprovalKeySettings(kid="clawshield", alg="hmac-sha256", secret=SecretStr(secret), issuers=["clawshield"])
        )
    if keys:
        result["keys"] = keys
    if tenant := os.environ.get("CLAWSHIELD_TENANT_ID"):
        result["tenant_id"] = tenant
    return result


def _one_line(exc: ValidationError) -> str:
    error = exc.errors()[0]
    location = ".".join(str(part) for part in error["loc"]) or "config"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"invalid config: {location}: {error['msg']}{more}"
