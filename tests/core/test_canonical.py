"""Canonical JSON (RFC 8785) and the ingress limits of SPEC §2, property-based."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from openexec_mcp.core.canonical import MAX_SAFE_INTEGER, canonicalize, check_json_value, parse_json
from openexec_mcp.errors import MalformedInputError

safe_ints = st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
finite_floats = st.floats(allow_nan=False, allow_infinity=False).filter(
    # Integral floats in [2^53, 1e21) are refused by design (see the test below).
    lambda f: not (f.is_integer() and MAX_SAFE_INTEGER < abs(f) < 1e21)
)
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | safe_ints | finite_floats | text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(text, children, max_size=5),
    max_leaves=30,
)


@given(json_values)
def test_parse_of_canonical_bytes_round_trips(value: Any) -> None:
    canonical = canonicalize(value)
    assert canonicalize(parse_json(canonical, max_bytes=10**6)) == canonical


@given(json_values)
def test_canonical_form_ignores_key_order_and_whitespace(value: Any) -> None:
    pretty = json.dumps(value, indent=2, sort_keys=False)
    reordered = json.dumps(value[::-1] if isinstance(value, list) else value, indent=1)
    assert canonicalize(parse_json(pretty, max_bytes=10**6)) == canonicalize(value)
    assert parse_json(reordered, max_bytes=10**6) is not None or value is None or reordered == "null"


@given(json_values)
def test_check_json_value_returns_rfc8785_bytes(value: Any) -> None:
    assert check_json_value(value, max_bytes=10**6) == rfc8785.dumps(value)


@given(st.one_of(st.integers(min_value=MAX_SAFE_INTEGER + 1), st.integers(max_value=-MAX_SAFE_INTEGER - 1)))
def test_integers_outside_safe_range_are_refused(number: int) -> None:
    with pytest.raises(MalformedInputError):
        parse_json(str(number))
    with pytest.raises(MalformedInputError):
        check_json_value({"n": number})


@pytest.mark.parametrize("number", [2.0**53, -(2.0**53), 1e20])
def test_integral_floats_whose_canonical_form_is_an_unsafe_integer_are_refused(number: float) -> None:
    assert canonicalize(number).isdigit() or canonicalize(number).lstrip(b"-").isdigit()
    with pytest.raises(MalformedInputError):
        check_json_value({"n": number})


@given(safe_ints)
def test_integers_inside_safe_range_are_accepted(number: int) -> None:
    assert parse_json(str(number)) == number


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", '{"a": NaN}'])
def test_nan_and_infinity_are_refused(literal: str) -> None:
    with pytest.raises(MalformedInputError):
        parse_json(literal)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_values_are_refused(value: float) -> None:
    with pytest.raises(MalformedInputError):
        check_json_value({"x": value})


@given(
    st.text(st.characters(min_codepoint=0x20, exclude_categories=["Cs"]), min_size=1, max_size=8).filter(
        lambda k: '"' not in k and "\\" not in k
    )
)
def test_duplicate_keys_are_refused(key: str) -> None:
    with pytest.raises(MalformedInputError, match="duplicate"):
        parse_json('{"%s": 1, "%s": 2}' % (key, key))  # noqa: UP031


@given(st.integers(min_value=0xD800, max_value=0xDFFF), st.booleans())
def test_lone_surrogates_are_refused_in_values_and_keys(codepoint: int, as_key: bool) -> None:
    escaped = f"\\u{codepoint:04x}"
    document = f'{{"{escaped}": 1}}' if as_key else f'{{"k": "{escaped}"}}'
    with pytest.raises(MalformedInputError):
        parse_json(document)
    with pytest.raises(MalformedInputError):
        check_json_value({chr(codepoint): 1} if as_key else {"k": chr(codepoint)})


@given(st.integers(min_value=1, max_value=80))
def test_nesting_deeper_than_limit_is_refused(depth: int) -> None:
    document = "[" * depth + "]" * depth
    if depth <= 32:
        assert parse_json(document) is not None
    else:
        with pytest.raises(MalformedInputError, match="nesting"):
            parse_json(document)


def test_very_deep_nesting_never_exhausts_the_stack() -> None:
    with pytest.raises(MalformedInputError):
        parse_json("[" * 100_000 + "]" * 100_000, max_bytes=10**6)
    deep: Any = []
    for _ in range(10_000):
        deep = [deep]
    with pytest.raises(MalformedInputError):
        check_json_value(deep)


@given(st.integers(min_value=0, max_value=300))
@settings(max_examples=50)
def test_canonical_size_limit_is_exact(length: int) -> None:
    value = {"s": "x" * length}
    size = len(canonicalize(value))
    assert check_json_value(value, max_bytes=size) == canonicalize(value)
    with pytest.raises(MalformedInputError, match="limit"):
        check_json_value(value, max_bytes=size - 1)


@pytest.mark.parametrize("raw", [b"\xff\xfe{}", b'{"a": "\xc3"}', b"{", b"", b"[1,]", b"{'a': 1}"])
def test_invalid_utf8_or_json_is_refused(raw: bytes) -> None:
    with pytest.raises(MalformedInputError):
        parse_json(raw)


@given(st.binary(max_size=64))
def test_parse_json_raises_only_malformed_input_error(raw: bytes) -> None:
    with contextlib.suppress(MalformedInputError):
        parse_json(raw)


def test_rfc8785_vector_from_the_rfc() -> None:
    # RFC 8785 §3.2.3 sorting example (keys ordered by UTF-16 code units).
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    keys = list(json.loads(canonicalize(value)))
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


@given(
    st.from_regex(r"\A[A-Za-z][A-Za-z0-9_.-]{0,63}\Z"),
    st.from_regex(r"\A[A-Za-z0-9._:-]{8,128}\Z"),
    st.dictionaries(text, json_values, max_size=5),
)
def test_action_request_bytes_equal_rfc8785_of_the_request(action: str, nonce: str, payload: dict[str, Any]) -> None:
    from openexec_mcp.core.action import ActionRequest, action_request_bytes

    expected = rfc8785.dumps({"action": action, "payload": payload, "nonce": nonce})
    assert action_request_bytes(action, nonce, canonicalize(payload)) == expected
    assert ActionRequest(action, payload, nonce).canonical_bytes() == expected
