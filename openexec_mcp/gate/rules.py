"""Policy rules ``[[policy.rules]]``: fnmatch over action names, an optional CEL condition (SPEC §11).

Rules apply to every action, built-in or upstream. For one call the effective approval policy is:

1. the first rule whose ``actions`` patterns match the advertised name and whose ``when`` (if
   any) evaluates to ``true``;
2. else ``[policy.actions.NAME]``;
3. else the action's own default: an upstream tool with ``readOnlyHint`` under
   ``trust_annotations = true`` is ``auto``; an ``@action`` may declare ``approval``;
4. else the mode default (``demo``: ``auto``, ``clawshield``: ``signed``).

``when`` is CEL (:mod:`openexec_mcp.core.cel`, shared with grants) over three variables: ``args``
(the payload without the reserved nonce, as JSON), ``action`` (the advertised name) and
``tenant_id``. Evaluation is pure and deterministic: no functions with side effects or clocks. An
expression that does not compile is a start-up error (exit 2); one that errors at call time or
yields a non-bool denies the call with ``policy_error`` (the gate records a receipt).
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from openexec_mcp.config import ApprovalPolicy, PolicyRuleSettings
from openexec_mcp.core.cel import (
    Activation,
    CELCompileError,
    CELCondition,
    CELEvaluationError,
    CELResultNotBoolError,
    activation,
    compile_condition,
)
from openexec_mcp.errors import ConfigError, PolicyError

__all__ = ["CompiledRule", "PolicyRules"]

logger = logging.getLogger("openexec_mcp.policy")


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """One rule, its CEL program compiled once at start.

    Attributes:
        index: Position in ``[[policy.rules]]`` (0-based), for messages.
        actions: fnmatch patterns over advertised names (case-sensitive).
        when: The CEL source, or ``None`` (always true).
        approval: The policy this rule gives.
        program: The compiled ``when``, or ``None``.
    """

    index: int
    actions: tuple[str, ...]
    when: str | None
    approval: ApprovalPolicy
    program: CELCondition | None

    def matches_name(self, name: str) -> bool:
        """Return whether one of the patterns matches ``name`` (``fnmatchcase``)."""
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.actions)


class PolicyRules:
    """The ordered, compiled ``[[policy.rules]]``.

    Raises:
        ConfigError: A ``when`` does not compile (the message says which rule and where).
    """

    def __init__(self, rules: Sequence[PolicyRuleSettings]) -> None:
        compiled: list[CompiledRule] = []
        for index, rule in enumerate(rules):
            program = None
            if rule.when is not None:
                try:
                    program = compile_condition(rule.when)
                except CELCompileError as exc:
                    raise ConfigError(f"policy.rules[{index}].when does not compile: {exc.detail}") from None
            compiled.append(CompiledRule(index, tuple(rule.actions), rule.when, rule.approval, program))
        self.rules: tuple[CompiledRule, ...] = tuple(compiled)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def to_json(self) -> list[dict[str, Any]]:
        """Return the rules as they enter ``policy_hash``: ``[{actions, when, approval}]``, in order."""
        return [{"actions": list(rule.actions), "when": rule.when, "approval": rule.approval} for rule in self.rules]

    def may_match(self, name: str) -> bool:
        """Return whether a rule could apply to ``name`` (a name pattern matches)."""
        return any(rule.matches_name(name) for rule in self.rules)

    def decide(self, name: str, args: Mapping[str, Any], tenant_id: str) -> ApprovalPolicy | None:
        """Return the approval of the first matching rule, or ``None`` when no rule matches.

        Args:
            name: The advertised action name.
            args: The validated payload (without the reserved nonce); JSON values.
            tenant_id: The caller's tenant.

        Raises:
            PolicyError: A matching rule's ``when`` failed to evaluate or did not yield a bool.
        """
        variables: Activation | None = None
        for rule in self.rules:
            if not rule.matches_name(name):
                continue
            if rule.program is None:
                return rule.approval
            if variables is None:
                variables = activation(name, args, tenant_id)
            try:
                matched = rule.program.evaluate(variables)
            except CELResultNotBoolError:
                raise PolicyError(f"policy rule {rule.index} did not yield a bool") from None
            except CELEvaluationError as exc:  # a missing key, a type error, ...
                logger.info("policy.rules[%d].when failed for %s: %s", rule.index, name, exc.detail)
                raise PolicyError(f"policy rule {rule.index} could not be evaluated for this call") from None
            if matched:
                return rule.approval
        return None


_MODE_DEFAULT: dict[str, ApprovalPolicy] = {"demo": "auto", "clawshield": "signed"}


class ApprovalResolver:
    """The effective approval policy of one call: rules, then overrides, then defaults (SPEC §5, §11).

    Args:
        mode: ``demo`` or ``clawshield``.
        rules: The compiled ``[[policy.rules]]``.
        overrides: ``[policy.actions.NAME] approval``.

    The action's own default comes from the action: ``approval`` (an ``@action`` declaration), or
    for an upstream tool under ``trust_annotations`` with ``readOnlyHint``
    (``trusted_read_only``), ``auto``. Annotations never weaken anything else.
    """

    def __init__(self, mode: str, rules: PolicyRules, overrides: Mapping[str, ApprovalPolicy]) -> None:
        self.mode = mode
        self.rules = rules
        self.overrides = dict(overrides)
        self.mode_default: ApprovalPolicy = _MODE_DEFAULT[mode]

    def fallback(self, action: Any) -> ApprovalPolicy:
        """Return the policy of ``action`` when no rule matches (override, action default, mode)."""
        override = self.overrides.get(action.name)
        if override is not None:
            return override
        declared: ApprovalPolicy | None = getattr(action, "approval", None)
        if declared is not None:
            return declared
        if getattr(action, "trusted_read_only", False):
            return "auto"
        return self.mode_default

    def advertised(self, action: Any) -> ApprovalPolicy:
        """Return the policy named in the tool's ``_meta``: the first unconditional matching rule, else the fallback.

        A rule with ``when`` may change it call by call; the advertised value is what applies when
        no conditional rule matches.
        """
        for rule in self.rules.rules:
            if rule.program is None and rule.matches_name(action.name):
                return rule.approval
        return self.fallback(action)

    def for_call(self, action: Any, args: Mapping[str, Any], tenant_id: str) -> ApprovalPolicy:
        """Return the policy of one call.

        Raises:
            PolicyError: A matching rule's ``when`` failed (the gate denies with a receipt).
        """
        decided = self.rules.decide(action.name, args, tenant_id)
        return decided if decided is not None else self.fallback(action)
