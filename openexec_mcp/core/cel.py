"""CEL conditions: the one wrapper of ``cel-python`` behind every ``when`` (SPEC §11, §13).

Policy rules (``[[policy.rules]] when``, SPEC §11) and grants (``when``, SPEC §13) are the same
kind of condition: a CEL expression over exactly three variables, the fixed activation built by
:func:`activation`:

- ``args``: the call's payload without the reserved ``nonce``, as JSON values;
- ``action``: the advertised action name;
- ``tenant_id``: the caller's tenant.

A condition is compiled once (:func:`compile_condition`, at start-up for rules, when a grant is
parsed) and then evaluated over any number of activations. Evaluation is pure and deterministic:
the environment declares no functions beyond the CEL standard ones, none of which reads a clock,
a file, the network or a random source, so the same expression over the same activation always
gives the same answer.

The two ways a condition can fail are told apart by type, so each caller maps them to its own
stable error code: :class:`CELCompileError` (the source is not a usable expression: a start-up
error for a rule, ``approval_malformed`` for a grant) and :class:`CELEvaluationError` (it failed
for this activation: a missing key, a type error, a division by zero, or a value that is not a
bool, :class:`CELResultNotBoolError`). Messages carry at most the first 200 characters of the
first line of the library's text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import celpy
from celpy.adapter import json_to_cel
from celpy.celtypes import BoolType

__all__ = [
    "Activation",
    "CELCompileError",
    "CELCondition",
    "CELError",
    "CELEvaluationError",
    "CELResultNotBoolError",
    "activation",
    "compile_condition",
]

Activation = Mapping[str, Any]
"""The variables of one call (``args``, ``action``, ``tenant_id``) as CEL values; see :func:`activation`."""


class CELError(Exception):
    """A CEL condition failed; ``detail`` is a one-line, bounded description (for logs and messages)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class CELCompileError(CELError):
    """The source does not parse or does not compile into a program."""


class CELEvaluationError(CELError):
    """The condition failed for one activation (a missing key, a type error, ...)."""


class CELResultNotBoolError(CELEvaluationError):
    """The condition evaluated, but to a value that is not a bool."""


def activation(action: str, args: Mapping[str, Any], tenant_id: str) -> Activation:
    """Return the fixed activation of one call, converted once for any number of conditions.

    Args:
        action: The advertised action name.
        args: The validated payload without the reserved nonce (JSON values).
        tenant_id: The caller's tenant.
    """
    return {
        "args": json_to_cel(dict(args)),
        "action": json_to_cel(action),
        "tenant_id": json_to_cel(tenant_id),
    }


@dataclass(frozen=True, slots=True)
class CELCondition:
    """A compiled CEL condition.

    Attributes:
        source: The CEL source text, as configured or signed.
    """

    source: str
    _program: Any = field(repr=False, compare=False)

    def evaluate(self, variables: Activation) -> bool:
        """Evaluate the condition over ``variables`` (from :func:`activation`).

        Raises:
            CELEvaluationError: It failed to evaluate.
            CELResultNotBoolError: It yielded a value that is not a bool.
        """
        try:
            value = self._program.evaluate(dict(variables))
        except Exception as exc:  # CELEvalError, and whatever else the library lets through
            raise CELEvaluationError(_first_line(exc)) from None
        if isinstance(value, Exception):  # some library errors are returned, not raised
            raise CELEvaluationError(_first_line(value))
        if not isinstance(value, BoolType):
            raise CELResultNotBoolError(f"yielded a {type(value).__name__}, not a bool")
        return bool(value)


def compile_condition(source: str) -> CELCondition:
    """Compile ``source`` once into a condition over ``args``, ``action`` and ``tenant_id``.

    Raises:
        CELCompileError: It does not parse or compile (the detail says where).
    """
    environment: Any = celpy.Environment()  # untyped library; one per compilation (not shared across threads)
    try:
        program = environment.program(environment.compile(source))
    except Exception as exc:  # CELParseError and friends: the expression is unusable
        raise CELCompileError(_first_line(exc)) from None
    return CELCondition(source, program)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
