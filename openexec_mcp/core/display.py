r"""What a person approving a call is shown: every key, every character visible (SPEC §5, §13).

An approver decides on text, so the text must be the call. One rule, :func:`is_hidden`, says
which characters could hide or reorder what is shown: C0 and C1 controls, DEL, the bidi
embeddings, overrides, isolates and marks (U+202A-202E, U+2066-2069, U+200E, U+200F, U+061C),
every other format character (zero-width spaces and joiners, U+FEFF), line and paragraph
separators, lone surrogates, private-use and unassigned code points. Two renderings apply it:

- :func:`render_action_request` (MCP elicitation, the ``approve`` command) lists every member
  of the payload (nested members by path, sorted), never cuts the list, and writes each hidden
  character as a ``\uXXXX`` escape inside quoted values (:func:`escape_text`). A long value may
  be elided for a small prompt only visibly, saying how many characters are hidden; a caller
  that cannot show the whole call under its size limit must not ask (``max_chars``).
- :func:`pretty_json` (the governance console) shows a value as indented JSON, whole, with each
  hidden character replaced by a ``⟦U+XXXX⟧`` marker (:func:`visible`); HTML escaping is the
  console's template engine's.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["escape_text", "is_hidden", "pretty_json", "render_action_request", "render_payload_lines", "visible"]

# Unicode general categories never shown raw: controls, format characters (bidi and zero-width
# included), line and paragraph separators, surrogates, private-use and unassigned code points
# (no glyph a person can rely on).
_HIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def is_hidden(char: str) -> bool:
    """Return whether the character ``char`` must not be shown raw to an approver.

    True for the Unicode general categories Cc (controls: C0, DEL, C1), Cf (format: bidi
    controls, zero-width characters, U+FEFF), Zl and Zp (line and paragraph separators), Cs
    (surrogates), Co (private use) and Cn (unassigned in this Python's Unicode database).
    """
    return unicodedata.category(char) in _HIDDEN_CATEGORIES


def _escape_char(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if char == '"':
        return '\\"'
    if is_hidden(char):
        code = ord(char)
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    return char


def escape_text(text: str) -> str:
    r"""Return ``text`` with backslash, quote and every hidden character escaped visibly.

    Args:
        text: Untrusted text (a payload string or key, an action name, a nonce).

    Returns:
        Printable text: ``\\``, ``\"``, and ``\uXXXX`` (``\UXXXXXXXX`` beyond the BMP) for
        every character :func:`is_hidden` names. Plain characters, non-ASCII letters
        included, are kept.
    """
    return "".join(_escape_char(char) for char in text)


def visible(text: str) -> str:
    """Return ``text`` with every character :func:`is_hidden` names, but newline, replaced by ``⟦U+XXXX⟧``.

    For text laid out already (a JSON document, a tenant id in an HTML cell): nothing else
    changes, so the result still reads as the original text, and the marker itself contains
    nothing HTML escaping would change. Newlines are kept: they are the layout.
    """
    return "".join(f"⟦U+{ord(char):04X}⟧" if char != "\n" and is_hidden(char) else char for char in text)


def pretty_json(value: Any) -> str:
    r"""Return ``value`` as indented JSON (keys sorted, non-ASCII kept) with :func:`visible` applied.

    Every key and every character of every value is kept. ``ensure_ascii=False`` keeps text
    readable; the string escapes of JSON (``\n`` inside a string, ``\u0000``) stay escapes, so
    a value can never break out of its line or its quotes.
    """
    return visible(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))


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
    action_request: Mapping[str, Any],
    action_hash: str,
    *,
    max_value_chars: int | None = None,
    max_chars: int | None = None,
) -> str | None:
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
