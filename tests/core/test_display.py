"""What an approver is shown (SPEC §5, §13; issue 9: truncated prompts and bidi overrides)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openexec_mcp.core.display import (
    escape_text,
    is_hidden,
    pretty_json,
    render_action_request,
    render_payload_lines,
    visible,
)

HIDDEN = [
    "\u202a",
    "\u202b",
    "\u202c",
    "\u202d",
    "\u202e",
    "\u2066",
    "\u2067",
    "\u2068",
    "\u2069",
    "\u200e",
    "\u200f",
    "\u061c",
    "\u200b",
    "\ufeff",
    "\u2028",
    "\u2029",
    "\x00",
    "\x1b",
    "\x7f",
    "\x85",
    "\x9f",
    "\ud800",
]


@pytest.mark.parametrize("char", HIDDEN, ids=[f"U+{ord(c):04X}" for c in HIDDEN])
def test_controls_bidi_and_invisible_characters_are_escaped_visibly(char: str) -> None:
    assert escape_text(f"a{char}b") == f"a\\u{ord(char):04x}b"


def test_plain_text_in_any_script_is_kept_and_quotes_cannot_close_a_value() -> None:
    assert escape_text("Grüße, 東京") == "Grüße, 東京"
    assert escape_text('x" ...(9 characters elided)... "y') == 'x\\" ...(9 characters elided)... \\"y'


@given(st.text())
def test_escaped_text_has_no_hidden_character_left(text: str) -> None:
    shown = escape_text(text)
    assert not any(char in shown for char in HIDDEN)


def test_every_member_is_listed_by_path_in_sorted_order() -> None:
    lines = render_payload_lines({"z": 1, "a": {"b": [True, None, {"c.d": "e"}]}, "empty": {}, "none": []})
    assert lines == ["a.b[0]: true", "a.b[1]: null", 'a.b[2]."c.d": "e"', "empty: {}", "none: []", "z: 1"]


def test_long_values_are_elided_visibly_with_a_count_and_never_dropped() -> None:
    (line,) = render_payload_lines({"body": "h" * 10 + "x" * 980 + "t" * 10}, max_value_chars=40)
    assert line == 'body: "' + "h" * 10 + "x" * 20 + '" ...(960 characters elided)... "' + "x" * 0 + "t" * 10 + '"'


def test_a_request_too_large_to_show_is_not_rendered_rather_than_cut() -> None:
    request = {"action": "echo", "payload": {f"k{i}": "v" * 50 for i in range(200)}, "nonce": "nonce-0001"}
    assert render_action_request(request, "a" * 64, max_value_chars=200, max_chars=4000) is None
    whole = render_action_request(request, "a" * 64)
    assert whole is not None and all(f"k{i}: " in whole for i in range(200)) and "a" * 64 in whole


# The console's rendering (⟦U+XXXX⟧ markers in laid-out text), the same rule as escape_text.


def test_bidi_override_zero_width_and_controls_become_visible_markers() -> None:
    shown = visible("pay\u202eexe.txt\u200b\u2066x\u0007\n")
    assert shown == "pay⟦U+202E⟧exe.txt⟦U+200B⟧⟦U+2066⟧x⟦U+0007⟧\n"


def test_ordinary_text_in_any_script_is_unchanged() -> None:
    for text in ("Grüße", "שלום", "日本語", "emoji 🎉", "<script>&amp;"):
        assert visible(text) == text


def test_pretty_json_keeps_every_key_and_the_whole_of_a_100_kb_value() -> None:
    payload = {"z": "last", "a": "A" * 100_000 + "END", "nested": {"k\u202e": [1, 2]}}
    shown = pretty_json(payload)
    assert "A" * 100_000 + "END" in shown and '"z": "last"' in shown
    assert "k⟦U+202E⟧" in shown and "\u202e" not in shown
    assert json.loads(pretty_json({"x": "\n\t"})) == {"x": "\n\t"}  # JSON escapes stay escapes


@pytest.mark.parametrize("char", HIDDEN, ids=[f"U+{ord(c):04X}" for c in HIDDEN])
def test_the_console_marks_every_character_the_prompt_escapes(char: str) -> None:
    assert visible(f"a{char}b") == f"a⟦U+{ord(char):04X}⟧b"


@pytest.mark.parametrize(
    "char",
    ["\ue000", "\U000f0000", "\U0010fffd", "\u0378", "\U000e0080"],
    ids=["U+E000", "U+F0000", "U+10FFFD", "U+0378", "U+E0080"],
)
def test_private_use_and_unassigned_code_points_are_hidden_in_both_renderings(char: str) -> None:
    code = ord(char)
    assert is_hidden(char)
    assert escape_text(char) == (f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
    assert visible(char) == f"⟦U+{code:04X}⟧"


@given(st.text())
def test_one_rule_decides_what_both_renderings_hide(text: str) -> None:
    for char in text:
        escaped = escape_text(char) != char and char not in '\\"'
        marked = visible(char) != char
        assert escaped == is_hidden(char)
        assert marked == (is_hidden(char) and char != "\n")
