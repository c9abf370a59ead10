r"""What a person approving a call is shown: every key, every character visible (SPEC §5, §13).

An approver decides on text, so the text must be the call: :func:`render_action_request` lists
every member of the payload (nested members by path, sorted), never cuts the list, and escapes
every character that could hide or reorder what is shown: C0 and C1 controls, DEL, the bidi
embeddings, overrides, isolates and marks (U+202A-202E, U+2066-2069, U+200E, U+200F, U+061C),
every other format character (zero-width spaces and joiners, U+FEFF), line and paragraph
separators, and lone surrogates. Each becomes a visible ``\uXXXX`` escape. A long value may be
elided for a small prompt (MCP elicitation) only visibly, saying how many characters are hidden;
a caller that cannot show the whole call under its size limit must not ask (see
:func:`render_action_request`'s ``max_chars``).
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["escape_text", "render_action_request", "render_payload_lines"]

# Unicode general categories never shown raw: controls, format characters (bidi and zero-width
# included), line and paragraph separators, surrogates.
_HIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def _escape_char(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if char == '"':
        return '\\"'
    if unicodedata.category(char) in _HIDDEN_CATEGORIES:
        code = ord(char)
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    return char


def escape_text(text: str) -> str:
    r"""Return ``text`` with backslash, quote and every hidden character escaped visibly.

    Args:
        text: Untrusted text (a payload string or key, an action name, a nonce).

    Returns:
        Printable text: ``\\``, ``\"``, and ``\uXXXX`` (``\UXXXXXXXX`` beyond the BMP) for
        controls, format characters (bidi included), separators and surrogates. Plain
        characters, non-ASCII letters included, are kept.
    """
    return "".join(_escape_char(char) for char in text)


def _quoted(text: str, max_value_chars: int | None) -> str:
    # The elision marker stands outside the quotes, where a value (whose quotes are escaped)
    # cannot forge it.
    if max_value_chars is None or len(text) <= max_value_chars:
        return f'"{escape_text(text)}"'
    head = max_value_chars * 3 // 4
    tail = max_value_chars - head
    hidden = len(text) - head - tail
    return f'"{escape_text(text[:head])}" ...({hidden} characters elided)... "{escape_text(text[len(text) - tail :])}"'


def _scalar(value: Any, max_value_chars: int | None) -> str:
    if isinstance(value, str):
        return _quoted(value, max_value_chars)
    return json.dumps(value)  # numbers, booleans and null print the same in JSON and here


def render_payload_lines(value: Any, *, max_value_chars: int | None = None, path: str = "") -> list[str]:
    """Return one ``path: value`` line per leaf of a JSON value, members sorted, nothing dropped.

    Args:
        value: A JSON value (the payload of an action request, already validated).
        max_value_chars: Elide string values (and keys) longer than this, visibly, keeping the
            head and the tail; ``None`` shows every character.
        path: The path prefix of ``value`` (recursion).

    Returns:
        Lines such as ``to: "alice@example.com"``, ``items[0].qty: 2``, ``tags: []``.
    """
    if isinstance(value, Mapping):
        members: Mapping[str, Any] = value  # pyright: ignore[reportUnknownVariableType]
        if not members:
            return [f"{path or '(payload)'}: {{}}"]
        lines: list[str] = []
        for key in sorted(members):
            plain = key.isascii() and key.replace("_", "a").isalnum() and len(key) <= (max_value_chars or len(key))
            shown = key if plain else _quoted(key, max_value_chars)
            lines += render_payload_lines(
                members[key], max_value_chars=max_value_chars, path=f"{path}.{shown}" if path else shown
            )
        return lines
    if isinstance(value, list):
        items: list[Any] = value  # pyright: ignore[reportUnknownVariableType]
        if not items:
            return [f"{path or '(payload)'}: []"]
        lines = []
        for index, item in enumerate(items):
            lines += render_payload_lines(item, max_value_chars=max_value_chars, path=f"{path}[{index}]")
        return lines
    return [f"{path or '(payload)'}: {_scalar(value, max_value_chars)}"]


def render_action_request(
    action_request: Mapping[str, Any], action_hash: str, *, max_value_chars: int | None = None,
    max_chars: int | None = None,
) -> str | None:  # fmt: skip
    """Render the action request (SPEC §3) for a person to approve.

    Args:
        action_request: ``{"action", "payload", "nonce"}`` (validated JSON).
        action_hash: Its hash, 64 hex, shown whole.
        max_value_chars: See :func:`render_payload_lines`; ``None`` shows every character.
        max_chars: The longest text the caller can show, in characters; ``None`` for no limit.

    Returns:
        The text, or ``None`` when it does not fit ``max_chars``: the caller must then not ask
        (never a truncated list of members).
    """
    lines = [
        f'Approve running "{escape_text(str(action_request.get("action")))}" once with these arguments?',
        *("  " + line for line in render_payload_lines(action_request.get("payload"), max_value_chars=max_value_chars)),
        f'nonce "{escape_text(str(action_request.get("nonce")))}", action_hash {escape_text(action_hash)}',
    ]
    text = "\n".join(lines)
    if max_chars is not None and len(text) > max_chars:
        return None
    return text
