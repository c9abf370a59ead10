"""The package's one strict base64 decoder (SPEC §5 "decoded strictly"; issue 10)."""

from __future__ import annotations

import ast
import base64
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import openexec_mcp
from openexec_mcp.core.encoding import b64decode_strict
from openexec_mcp.errors import MalformedInputError

PACKAGE = Path(openexec_mcp.__file__).parent


@given(st.binary(max_size=80))
def test_every_accepted_spelling_decodes_to_the_bytes(data: bytes) -> None:
    standard = base64.b64encode(data).decode()
    urlsafe = base64.urlsafe_b64encode(data).decode()
    for spelling in {standard, standard.rstrip("="), urlsafe, urlsafe.rstrip("=")}:
        assert b64decode_strict(spelling) == data


@pytest.mark.parametrize(
    "text",
    [
        "AA+_",  # both alphabets
        "QQ== ",  # whitespace
        "QQ\n==",
        "Q===",  # excess padding
        "QQ=",  # padding that does not complete a quantum
        "Q",  # impossible length
        "QR==",  # non-zero trailing bits (QQ== is the canonical spelling of b"A")
        "QUF=",  # likewise for two bytes
        "QQ==QQ==",  # padding in the middle
        "QQ\u0660=",  # a non-ASCII digit
        "*QQ=",
    ],
)
def test_non_canonical_or_foreign_base64_is_refused(text: str) -> None:
    with pytest.raises(MalformedInputError):
        b64decode_strict(text)


def test_no_other_base64_decoder_is_used_in_the_package() -> None:
    """Three decoders once disagreed on what "strict" meant; now encoding.py holds the only one."""
    callers: list[str] = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "encoding.py" and path.parent.name == "core":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in {
                "b64decode", "urlsafe_b64decode", "standard_b64decode", "a2b_base64", "decodebytes",
            }:  # fmt: skip
                callers.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert callers == []
