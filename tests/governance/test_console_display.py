"""What the console shows of untrusted call data (SPEC §13): every character, visibly, nothing cut, HTML-escaped."""

from __future__ import annotations

from openexec_mcp.core.action import compute_action_hash
from openexec_mcp.governance.display import console_environment
from openexec_mcp.governance.records import PendingRequest


def test_console_templates_escape_html_and_mark_hidden_characters_in_one_pass() -> None:
    env = console_environment()
    shown = env.from_string("<code>{{ visible(x) }}</code><pre>{{ pretty_json(y) }}</pre>").render(
        x="<script>alert(1)</script>\u202egpj.exe", y={"k\u200b": "</pre><b>&"}
    )
    assert shown.startswith("<code>&lt;script&gt;alert(1)&lt;/script&gt;⟦U+202E⟧gpj.exe</code>")
    assert "&#34;k⟦U+200B⟧&#34;: &#34;&lt;/pre&gt;&lt;b&gt;&amp;&#34;" in shown
    assert "\u202e" not in shown and "\u200b" not in shown and "<script>" not in shown


def test_every_console_template_is_autoescaped() -> None:
    env = console_environment()
    autoescape = env.autoescape
    assert callable(autoescape)
    names = env.list_templates(extensions=["html"])
    assert {"index.html", "login.html", "request.html", "result.html"} <= set(names)
    assert all(autoescape(name) for name in names)


def test_recomputed_hash_refuses_requests_that_are_not_exactly_an_action_request() -> None:
    good = {"action": "count", "payload": {"label": "a"}, "nonce": "n-1"}
    expected = compute_action_hash("count", {"label": "a"}, "n-1")
    item = PendingRequest("s0", "r", "default", expected, good, "t0", "t1")
    assert item.hash_matches
    assert not PendingRequest("s0", "r", "default", "0" * 64, good, "t0", "t1").hash_matches
    extra = {**good, "note": "an extra key the hash would not cover"}
    assert PendingRequest("s0", "r", "default", expected, extra, "t0", "t1").recomputed_hash is None
