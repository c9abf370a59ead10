"""The README's "Witnesses and evidence bundles" commands parse as written, and its config loads.

The flows themselves run in ``test_witness_e2e.py`` with real processes; this pins the README to
the CLI and the settings model so the two cannot drift apart.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

from openexec_mcp.cli import build_parser
from openexec_mcp.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def section() -> str:
    text = README.read_text()
    return text.split("### Witnesses and evidence bundles", 1)[1].split("\n## ", 1)[0]


def commands() -> list[str]:
    found: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", section(), flags=re.DOTALL):
        joined = block.replace("\\\n", " ")
        lines = [line.split(" #", 1)[0].split(" > ", 1)[0] for line in joined.splitlines()]
        found += [line for line in lines if line.startswith(".venv/bin/openexec-mcp ")]
    return found


def test_the_section_shows_the_witnessed_flow_and_the_bundle() -> None:
    names = {shlex.split(command)[1] + " " + shlex.split(command)[2] for command in commands()}
    assert names == {"witness key", "witness serve", "receipt verify", "ledger bundle", "bundle verify"}


@pytest.mark.parametrize("command", commands())
def test_each_readme_command_parses(command: str) -> None:
    argv = shlex.split(re.sub(r"\$\([^)]*\)", "BASE64", command))[1:]
    args = build_parser().parse_args(argv)
    assert callable(args.run)


def test_the_readme_server_config_is_valid() -> None:
    (toml,) = re.findall(r"```toml\n(.*?)```", section(), flags=re.DOTALL)
    settings = Settings.model_validate(tomllib.loads(toml))
    assert [w.name for w in settings.ledger.witnesses] == ["witness1.example/w", "witness2.example/w"]
    assert settings.ledger.witness_quorum == 2
