"""What the console shows of untrusted call data (SPEC §13): every character, visibly, nothing cut."""

from __future__ import annotations

import json

from openexec_mcp.governance.display import pretty_json, visible
from openexec_mcp.governance.service import PendingRequest


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


def test_recomputed_hash_refuses_requests_that_are_not_exactly_an_action_request() -> None:
    good = {"action": "count", "payload": {"label": "a"}, "nonce": "n-1"}
    from openexec_mcp.core.action import compute_action_hash

    expected = compute_action_hash("count", {"label": "a"}, "n-1")
    item = PendingRequest("s0", "r", "default", expected, good, "t0", "t1")
    assert item.hash_matches
    assert not PendingRequest("s0", "r", "default", "0" * 64, good, "t0", "t1").hash_matches
    extra = {**good, "note": "an extra key the hash would not cover"}
    assert PendingRequest("s0", "r", "default", expected, extra, "t0", "t1").recomputed_hash is None
