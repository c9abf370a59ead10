"""The console's templates: untrusted call data shown whole, HTML-escaped, hidden characters made visible (SPEC §13).

A payload can try to fool the approver: a right-to-left override (U+202E) reorders what is shown,
zero-width characters hide text, control characters move the cursor, a huge value pushes the
rest off screen. The templates show every key and every character through two helpers of
:mod:`openexec_mcp.core.display`: ``visible(text)`` (hidden code points become markers such as
``⟦U+202E⟧``) and ``pretty_json(value)`` (the whole value as indented JSON, markers applied);
nothing is cut. HTML escaping is Jinja2's autoescape, on for every template here (the marker
text contains nothing to escape).
"""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, select_autoescape

from openexec_mcp.core.display import pretty_json, visible

__all__ = ["console_environment"]


def console_environment() -> Environment:
    """Return the Jinja2 environment of ``openexec_mcp/governance/templates``.

    Autoescape is on for ``.html`` templates (and strings rendered from the environment); the
    globals ``visible`` and ``pretty_json`` are those of :mod:`openexec_mcp.core.display`.
    """
    env = Environment(
        loader=PackageLoader("openexec_mcp.governance", "templates"),
        autoescape=select_autoescape(default_for_string=True),
    )
    env.globals["visible"] = visible  # pyright: ignore[reportUnknownMemberType]
    env.globals["pretty_json"] = pretty_json  # pyright: ignore[reportUnknownMemberType]
    return env
