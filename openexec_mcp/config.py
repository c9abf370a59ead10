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

The tables themselves (``[storage]``, ``[limits]``, ``[[approvals.keys]]`` ...) are the models of
:mod:`openexec_mcp.config_sections`, re-exported here: import every configuration name from
this module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from openexec_mcp.config_sections import (
    HMAC_MIN_SECRET_BYTES,
    ActionPolicySettings,
    ActionsSettings,
    ApprovalKeySettings,
    ApprovalPolicy,
    ApprovalsSettings,
    AuthSettings,
    AuthToken,
    BuiltinName,
    HttpSettings,
    LedgerSettings,
    LimitsSettings,
    McpSettings,
    NonceSettings,
    PolicyRuleSettings,
    PolicySettings,
    StorageSettings,
    WitnessSettings,
)
from openexec_mcp.errors import ConfigError
from openexec_mcp.upstream.config import UpstreamSettings

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
    "ClawshieldEnvSource",
    "HttpSettings",
    "LedgerSettings",
    "LimitsSettings",
    "McpSettings",
    "NonceSettings",
    "PolicyRuleSettings",
    "PolicySettings",
    "Settings",
    "StorageSettings",
    "WitnessSettings",
    "default_state_dir",
    "load_settings",
]


def default_state_dir() -> Path:
    """Return ``$XDG_STATE_HOME/openexec-mcp`` (``~/.local/state/openexec-mcp`` when unset)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "openexec-mcp"


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
