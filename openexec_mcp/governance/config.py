"""The governance service's configuration: the ``[governance]`` table and ``governance serve`` options (SPEC §13).

Approvers sign in with a token whose SHA-256 is configured; each decides for the tenants listed
(``"*"``: all). Notifiers announce new pending requests by webhook or email. Watched servers
are the execution servers the console reads pending requests from and submits decisions to.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from openexec_mcp.errors import ConfigError

__all__ = [
    "Approver",
    "GovernanceConfig",
    "Notifier",
    "WatchedServer",
    "load_governance_config",
]


@dataclass(frozen=True, slots=True)
class Approver:
    """``[[governance.approvers]]``: who may sign in, and for which tenants (``"*"``: all)."""

    sha256: str
    name: str
    tenants: tuple[str, ...]

    def may_decide(self, tenant_id: str) -> bool:
        """Return whether this approver decides for ``tenant_id``."""
        return "*" in self.tenants or tenant_id in self.tenants


@dataclass(frozen=True, slots=True)
class Notifier:
    """``[[governance.notify]]``: a webhook (``webhook_url``) or an email recipient (``email`` + SMTP)."""

    webhook_url: str | None = None
    email: str | None = None
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_from: str = "openexec-governance@localhost"
    tenants: tuple[str, ...] = ("*",)
    """Announce only requests of these tenants (``"*"``: all)."""

    def wants(self, tenant_id: str) -> bool:
        """Return whether requests of ``tenant_id`` are announced here."""
        return "*" in self.tenants or tenant_id in self.tenants


@dataclass(frozen=True, slots=True)
class WatchedServer:
    """An execution server the console reads pending requests from and submits decisions to."""

    index: int
    url: str
    token: str | None = None


@dataclass(frozen=True, slots=True)
class GovernanceConfig:
    """The service's configuration (``[governance]`` table and ``governance serve`` options)."""

    key: Ed25519PrivateKey
    kid: str
    issuer: str
    servers: tuple[WatchedServer, ...]
    approvers: tuple[Approver, ...]
    notify: tuple[Notifier, ...] = ()
    public_url: str = "http://127.0.0.1:8700"
    api_key: str | None = None
    """The seed's ``CLAWSHIELD_API_KEY``: execution servers push requests and poll decisions with it."""
    poll_seconds: float = 2.0
    approval_ttl_seconds: int = 300
    state_dir: Path | None = None
    """Where ``decisions.jsonl`` keeps the history and the seed decisions across restarts (``None``: memory)."""


def load_governance_config(
    *,
    key_file: Path,
    servers: list[str],
    config_file: Path | None,
    token: str | None,
    kid: str,
    issuer: str,
    public_url: str,
    api_key: str | None,
    poll_seconds: float = 2.0,
    state_dir: Path | None = None,
) -> GovernanceConfig:
    """Build the configuration from the options and the ``[governance]`` table of ``config_file``.

    Raises:
        ConfigError: Unreadable key or config, no approver, a malformed approver or notifier.
    """
    try:
        key = load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read governance key {key_file}: {type(exc).__name__}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{key_file} is not an Ed25519 private key")
    table: dict[str, Any] = {}
    if config_file is not None:
        try:
            table = tomllib.loads(config_file.read_text(encoding="utf-8")).get("governance", {})
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {config_file}: {exc}") from None
    approvers: list[Approver] = []
    for entry in table.get("approvers", []):
        digest, name, tenants = entry.get("sha256"), entry.get("name"), entry.get("tenants", ["*"])
        if not isinstance(digest, str) or len(digest) != 64 or not isinstance(name, str) or not name:
            raise ConfigError("each [[governance.approvers]] needs sha256 (64 hex) and name")
        approvers.append(Approver(digest.lower(), name, tuple(str(t) for t in tenants)))
    if not approvers:
        raise ConfigError("no [[governance.approvers]] configured: nobody could sign in")
    notifiers: list[Notifier] = []
    for entry in table.get("notify", []):
        if ("webhook_url" in entry) == ("email" in entry):
            raise ConfigError("each [[governance.notify]] needs exactly one of webhook_url or email")
        notifiers.append(
            Notifier(
                webhook_url=entry.get("webhook_url"),
                email=entry.get("email"),
                smtp_host=entry.get("smtp_host", "127.0.0.1"),
                smtp_port=int(entry.get("smtp_port", 25)),
                smtp_from=entry.get("smtp_from", "openexec-governance@localhost"),
                tenants=tuple(str(t) for t in entry.get("tenants", ["*"])),
            )
        )
    urls = servers or list(table.get("servers", []))
    watched = tuple(WatchedServer(i, url.rstrip("/"), token) for i, url in enumerate(urls))
    return GovernanceConfig(
        key=key,
        kid=kid,
        issuer=issuer,
        servers=watched,
        approvers=tuple(approvers),
        notify=tuple(notifiers),
        public_url=(table.get("public_url") or public_url).rstrip("/"),
        api_key=api_key,
        poll_seconds=poll_seconds,
        state_dir=state_dir,
    )
