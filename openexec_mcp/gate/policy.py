"""The effective policy: which actions are exposed and how each is approved (SPEC §5).

Computed once at start from the settings and the registry, then frozen: ``policy_hash`` is the
SHA-256 hex of its RFC 8785 bytes, shown in ``/health`` and stamped on every receipt, so a
receipt says under which rules it was produced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from openexec_mcp.config import ApprovalPolicy, Settings
from openexec_mcp.core.canonical import canonicalize, sha256_hex
from openexec_mcp.errors import ConfigError
from openexec_mcp.registry import Registry

__all__ = ["Policy", "build_policy"]

_MODE_DEFAULT: dict[str, ApprovalPolicy] = {"demo": "auto", "clawshield": "signed"}


@dataclass(frozen=True, slots=True)
class Policy:
    """The frozen effective policy.

    Attributes:
        mode: ``demo`` or ``clawshield``.
        approvals: Exposed action name → ``auto | signed | elicit | deny``.
        limits: The ingress limits in force (bytes, containers).
        policy_hash: SHA-256 hex (64 chars) of the JCS of :meth:`to_json`.
    """

    mode: str
    approvals: Mapping[str, ApprovalPolicy]
    limits: Mapping[str, int]
    policy_hash: str

    def to_json(self) -> dict[str, Any]:
        """Return the hashed form: mode, per-action approval, exposed actions, limits."""
        return _policy_json(self.mode, self.approvals, self.limits)


def build_policy(settings: Settings, registry: Registry, *, toolset: str | None = None) -> Policy:
    """Compute the effective policy, failing closed on any unknown name.

    Args:
        settings: The loaded settings.
        registry: Every loaded action.
        toolset: Expose only the actions of ``[toolsets] NAME`` (``serve --toolset``).

    Raises:
        ConfigError: Unknown toolset, or an action named in ``[toolsets]`` or
            ``[policy.actions]`` that is not registered.
    """
    for name, members in settings.toolsets.items():
        for member in members:
            if member not in registry:
                raise ConfigError(f"toolset {name!r} names unknown action {member!r}")
    for name in settings.policy.actions:
        if name not in registry:
            raise ConfigError(f"policy.actions names unknown action {name!r}")
    if toolset is None:
        exposed = sorted(registry)
    elif toolset in settings.toolsets:
        exposed = sorted(set(settings.toolsets[toolset]))
    else:
        raise ConfigError(f"unknown toolset {toolset!r}")
    default = _MODE_DEFAULT[settings.mode]
    approvals: dict[str, ApprovalPolicy] = {}
    for name in exposed:
        override = settings.policy.actions.get(name)
        declared = registry[name].approval
        approvals[name] = override.approval if override else declared or default
    limits = {
        "max_payload_bytes": settings.limits.max_payload_bytes,
        "max_depth": settings.limits.max_depth,
        "max_result_bytes": settings.limits.max_result_bytes,
        "handler_timeout_seconds": settings.limits.handler_timeout_seconds,
        "handler_concurrency": settings.limits.handler_concurrency,
    }
    policy_hash = sha256_hex(canonicalize(_policy_json(settings.mode, approvals, limits)))
    return Policy(mode=settings.mode, approvals=approvals, limits=limits, policy_hash=policy_hash)


def _policy_json(mode: str, approvals: Mapping[str, str], limits: Mapping[str, int]) -> dict[str, Any]:
    return {"mode": mode, "approvals": dict(approvals), "exposed": sorted(approvals), "limits": dict(limits)}
