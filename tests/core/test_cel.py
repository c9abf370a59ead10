"""The one CEL wrapper behind policy rules' and grants' ``when`` (SPEC §11, §13)."""

from __future__ import annotations

import pytest

from openexec_mcp.core.cel import (
    CELCompileError,
    CELEvaluationError,
    CELResultNotBoolError,
    activation,
    compile_condition,
)


def test_a_condition_sees_exactly_args_action_and_tenant() -> None:
    condition = compile_condition('args.amount < 100 && action == "send" && tenant_id == "acme"')
    assert condition.evaluate(activation("send", {"amount": 5}, "acme")) is True
    assert condition.evaluate(activation("send", {"amount": 500}, "acme")) is False
    assert condition.evaluate(activation("send", {"amount": 5}, "other")) is False


def test_a_source_that_does_not_parse_is_a_compile_error_not_an_evaluation_error() -> None:
    with pytest.raises(CELCompileError) as caught:
        compile_condition("args.amount <")
    assert not isinstance(caught.value, CELEvaluationError)
    assert caught.value.detail and "\n" not in caught.value.detail and len(caught.value.detail) <= 200


@pytest.mark.parametrize("source", ["args.missing == 1", "1 / 0 == 1", 'args.amount + "x" == 1'])
def test_a_condition_that_fails_for_one_call_is_an_evaluation_error(source: str) -> None:
    condition = compile_condition(source)  # compiles: the failure is the call's
    with pytest.raises(CELEvaluationError) as caught:
        condition.evaluate(activation("send", {"amount": 5}, "acme"))
    assert not isinstance(caught.value, CELResultNotBoolError)


@pytest.mark.parametrize("source", ["args.amount", '"yes"', "[true]"])
def test_a_condition_that_yields_no_bool_is_refused_not_coerced(source: str) -> None:
    with pytest.raises(CELResultNotBoolError):
        compile_condition(source).evaluate(activation("send", {"amount": 5}, "acme"))


def test_evaluation_is_deterministic_and_leaves_the_activation_as_it_was() -> None:
    condition = compile_condition("size(args.items) > 1 && args.items[0] == 'a'")
    variables = activation("send", {"items": ["a", "b"]}, "acme")
    before = dict(variables)
    assert [condition.evaluate(variables) for _ in range(5)] == [True] * 5
    assert dict(variables) == before
