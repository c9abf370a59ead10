"""The effective policy: which actions are exposed and how each is approved (SPEC §5).

Computed once at start from the settings and the registry, then frozen: ``policy_hash`` is the
SHA-256 hex of its RFC 8785 bytes, shown in ``/health`` and stamped on every receipt, so a
receipt says under which rules it was produced.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from openexec_mcp.config import ApprovalPolicy, Settings
from openexec_mcp.core.canonical import canonicalize, sha256_hex
from openexec_mcp.errors import ConfigError
from openexec_mcp.gate.rules import ApprovalResolver, PolicyRules
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
    resolver: ApprovalResolver = field(default_factory=lambda: ApprovalResolver("demo", PolicyRules([]), {}))
    """Rules, overrides and defaults, per call (SPEC §11): also for actions that appear at run time."""
    upstreams: Mapping[str, Mapping[str, Any]] = field(default_factory=dict[str, Mapping[str, Any]])
    """Upstream name → its policy-relevant settings (``nonce``, ``trust_annotations``)."""
    toolset: tuple[str, ...] | None = None
    """The ``--toolset`` members (fnmatch patterns for upstream tools), or ``None``: everything."""

    def to_json(self) -> dict[str, Any]:
        """Return the hashed form: mode, per-action approval, exposed actions, limits, rules, upstreams."""
        return _policy_json(self.mode, self.approvals, self.limits, self.resolver.rules, self.upstreams)

    def exposes(self, action: Any) -> bool:
        """Return whether ``action`` is exposed: a registry action of the policy, or an upstream tool."""
        if getattr(action, "upstream", None) is None:
            return action.name in self.approvals
        if self.toolset is None:
            return True
        return any(fnmatch.fnmatchcase(action.name, member) for member in self.toolset)

    def approval_for(self, action: Any, payload: Mapping[str, Any], tenant_id: str) -> ApprovalPolicy:
        """Return the approval policy of one call (rules first; SPEC §5, §11).

        Raises:
            PolicyError: A matching rule's ``when`` failed to evaluate.
        """
        if not self.resolver.rules and action.name in self.approvals:
            return self.approvals[action.name]
        return self.resolver.for_call(action, payload, tenant_id)

    def advertised(self, action: Any) -> ApprovalPolicy:
        """Return the policy named in the tool's ``_meta["dev.openexec/approval"]``."""
        if not self.resolver.rules and action.name in self.approvals:
            return self.approvals[action.name]
        return self.resolver.advertised(action)


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
    # Upstream tools are known only once their upstream answers: a name under "<upstream>." of a
    # configured upstream is accepted here (a typo in the tool part simply never matches).
    prefixes = tuple(f"{upstream.name}." for upstream in settings.upstreams)
    for name, listed in settings.toolsets.items():
        for member in listed:
            if member not in registry and not member.startswith(prefixes):
                raise ConfigError(f"toolset {name!r} names unknown action {member!r}")
    for name in settings.policy.actions:
        if name not in registry and not name.startswith(prefixes):
            raise ConfigError(f"policy.actions names unknown action {name!r}")
    rules = PolicyRules(settings.policy.rules)  # a `when` that does not compile: ConfigError (exit 2)
    members: tuple[str, ...] | None = None
    if toolset is None:
        exposed = sorted(registry)
    elif toolset in settings.toolsets:
        members = tuple(settings.toolsets[toolset])
        exposed = sorted({member for member in members if member in registry})
    else:
        raise ConfigError(f"unknown toolset {toolset!r}")
    default = _MODE_DEFAULT[settings.mode]
    approvals: dict[str, ApprovalPolicy] = {}
    overrides: dict[str, ApprovalPolicy] = {name: entry.approval for name, entry in settings.policy.actions.items()}
    resolver = ApprovalResolver(settings.mode, rules, overrides)
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
    upstreams = {
        upstream.name: {"nonce": upstream.nonce, "trust_annotations": upstream.trust_annotations}
        for upstream in settings.upstreams
    }
    policy_hash = sha256_hex(canonicalize(_policy_json(settings.mode, approvals, limits, rules, upstreams)))
    return Policy(
        mode=settings.mode, approvals=approvals, limits=limits, policy_hash=policy_hash, resolver=resolver,
        upstreams=upstreams, toolset=members,
    )  # fmt: skip


def _policy_json(
    mode: str,
    approvals: Mapping[str, str],
    limits: Mapping[str, int],
    rules: PolicyRules | None = None,
    upstreams: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    hashed: dict[str, Any] = {
        "mode": mode, "approvals": dict(approvals), "exposed": sorted(approvals), "limits": dict(limits),
    }  # fmt: skip
    # Added only when used, so that a policy without rules or upstreams keeps its earlier hash.
    if rules:
        hashed["rules"] = rules.to_json()
    if upstreams:
        hashed["upstreams"] = {name: dict(settings) for name, settings in upstreams.items()}
    return hashed
