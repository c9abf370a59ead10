"""Showing untrusted call data to a person: complete, escaped by the template, invisible characters made visible.

A payload can try to fool the approver: a right-to-left override (U+202E) reorders what is shown,
zero-width characters hide text, control characters move the cursor, a huge value pushes the
rest off screen. The console shows every key and every character: code points that would not
show as themselves are replaced by a visible marker such as ``⟦U+202E⟧``, and nothing is cut.
HTML escaping is Jinja2's autoescape (the marker text contains nothing to escape).
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

__all__ = ["pretty_json", "visible"]

_BIDI = frozenset([0x061C, 0x200E, 0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069])


def _marker(code: int) -> str:
    return f"⟦U+{code:04X}⟧"


def visible(text: str) -> str:
    """Return ``text`` with invisible or reordering code points replaced by ``⟦U+XXXX⟧`` markers.

    Replaced: bidi controls, other format characters (zero-width), controls but newline,
    surrogates, private-use and unassigned code points, line and paragraph separators.
    """
    out: list[str] = []
    for char in text:
        code = ord(char)
        if char == "\n":
            out.append(char)
        elif code in _BIDI or unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            out.append(_marker(code))
        else:
            out.append(char)
    return "".join(out)


def pretty_json(value: Any) -> str:
    r"""Return ``value`` as indented JSON (keys sorted, non-ASCII kept) with :func:`visible` applied.

    ``ensure_ascii=False`` keeps text readable; string escapes of JSON (``\\n`` inside a string,
    ``\\u0000``) stay escapes, so a value can never break out of its line or its quotes.
    """
    return visible(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))
