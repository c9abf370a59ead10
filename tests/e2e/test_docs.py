"""The documents in docs/ (and the README's links) say what the code does, where a test can tell.

Checked against the code itself, never against a copy: every error code with its class and HTTP
status (docs/contract.md §10), every HTTP route (§8) and MCP ``_meta`` key (§9), every CLI
command and option (docs/cli.md), every config key (docs/configuration.md), every verification
failure reason (docs/auditor.md), every relative link and anchor (README.md and docs/), and the
auditor guide's by-hand verifier, run on a real receipt and its proof.
"""

from __future__ import annotations

import argparse
import base64
import inspect
import json
import re
import subprocess
import sys
import tomllib
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from openexec_mcp import errors
from openexec_mcp.cli import build_parser
from openexec_mcp.config import Settings
from openexec_mcp.gate.pipeline import Answer, CallContext
from openexec_mcp.runtime import Runtime
from openexec_mcp.transport import mcp as mcp_transport

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PACKAGE = ROOT / "openexec_mcp"


def read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def table_rows(text: str) -> list[list[str]]:
    """Return the cells of every markdown table row (``|`` escaped as ``\\|`` stays in its cell)."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("|") and not re.fullmatch(r"\|[-| ]+\|", line):
            rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return rows


def section(text: str, heading: str) -> str:
    """Return the text of the ``## heading`` section, up to the next ``## ``."""
    return text.split(f"\n## {heading}", 1)[1].split("\n## ", 1)[0]


# -- error codes ----------------------------------------------------------------------------------


def leaf_error_classes() -> list[type[errors.OpenExecError]]:
    classes = [getattr(errors, name) for name in errors.__all__]
    return [cls for cls in classes if isinstance(cls, type) and issubclass(cls, errors.OpenExecError) and cls.code]


def test_every_error_code_is_in_the_contract_with_its_class_and_http_status() -> None:
    rows = {row[0].strip("`"): row for row in table_rows(section(read("contract.md"), "10. Error codes")) if row}
    for cls in leaf_error_classes():
        assert cls.code in rows, f"{cls.code} ({cls.__name__}) is missing from contract.md §10"
        row = rows[cls.code]
        assert f"`{cls.__name__}`" in row[1], f"{cls.code}: class {cls.__name__} not named in its row"
        assert row[2] == str(cls.http_status), f"{cls.code}: HTTP {cls.http_status} in the code, {row[2]} in the docs"


def test_the_error_table_names_no_code_the_code_does_not_have() -> None:
    codes = {cls.code for cls in leaf_error_classes()}
    table = table_rows(section(read("contract.md"), "10. Error codes"))[1:]
    documented = {row[0].strip("`") for row in table if row and row[0].startswith("`")}
    assert documented <= codes, f"documented but not in openexec_mcp.errors: {sorted(documented - codes)}"


# -- HTTP routes and MCP _meta keys -----------------------------------------------------------------


def test_every_http_route_is_in_the_contract_with_its_method() -> None:
    source = "".join(path.read_text(encoding="utf-8") for path in sorted((PACKAGE / "transport" / "http").glob("*.py")))
    routes = re.findall(r'\("(/[^"]*)", \["([A-Z]+)"\], (?:"[a-z]+"|None),', source)
    assert len(routes) >= 10, "the route table of build_http_app was not found"
    rows = table_rows(section(read("contract.md"), "8. HTTP surface"))
    documented = {(row[0].strip("`"), method) for row in rows for method in row[1].replace(" ", "").split("/")}
    for path, method in routes:
        assert (path, method) in documented, f"{method} {path} is missing from contract.md §8"


def test_every_mcp_meta_key_is_in_the_contract() -> None:
    text = section(read("contract.md"), "9. MCP tools and `_meta` keys")
    for key in (mcp_transport.APPROVAL_META, mcp_transport.NONCE_META, mcp_transport.RUN_ID_META):
        assert f"`{key}`" in text, f"_meta key {key} is missing from contract.md §9"


# -- CLI ------------------------------------------------------------------------------------------


def cli_commands(
    parser: argparse.ArgumentParser | None = None, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Yield ``("ledger resolve", parser)`` for every leaf command of ``openexec-mcp``."""
    parser = parser or build_parser()
    for item in parser._actions:  # pyright: ignore[reportPrivateUsage]
        if isinstance(item, argparse._SubParsersAction):  # pyright: ignore[reportPrivateUsage]
            for name, sub in item.choices.items():  # pyright: ignore[reportUnknownVariableType]
                yield from cli_commands(sub, (*path, name))  # pyright: ignore[reportUnknownArgumentType]
            return
    yield " ".join(path), parser


def test_every_cli_command_and_option_is_in_the_cli_reference() -> None:
    table = {row[0].strip("`"): " ".join(row[1:]) for row in table_rows(section(read("cli.md"), "Commands"))}
    commands = list(cli_commands())
    assert len(commands) >= 15
    for name, parser in commands:
        assert name in table, f"`openexec-mcp {name}` is missing from docs/cli.md"
        for option in parser._actions:  # pyright: ignore[reportPrivateUsage]
            longs = [flag for flag in option.option_strings if flag.startswith("--")]
            if not longs or longs[0] in ("--help", "--config", "--log-level"):
                continue  # --config and --log-level are described once, above the table
            assert longs[0] in table[name], f"`openexec-mcp {name} {longs[0]}` is missing from docs/cli.md"


def test_every_cli_exit_code_is_in_the_cli_reference() -> None:
    from openexec_mcp import cli

    codes = {row[0] for row in table_rows(section(read("cli.md"), "Exit codes"))}
    for value in (cli.EXIT_OK, cli.EXIT_VERIFY_FAILED, cli.EXIT_USAGE, cli.EXIT_EXCEPTION, 130):
        assert str(value) in codes, f"exit code {value} is missing from docs/cli.md"


# -- configuration --------------------------------------------------------------------------------


def config_keys(model: type[BaseModel] = Settings, prefix: str = "") -> Iterator[str]:
    """Yield every dotted config key; tables of free names (``[toolsets]``) as ``toolsets.NAME``."""
    for name, info in model.model_fields.items():
        if info.exclude:
            continue  # not a key of the file (``config_file`` names the file itself)
        key = prefix + (info.alias or name)
        annotation = info.annotation
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        models = [arg for arg in args if inspect.isclass(arg) and issubclass(arg, BaseModel)]
        if origin in (typing.Union, types.UnionType) and models:  # an optional table: `X | None`
            yield key
            annotation, origin, args = models[0], None, typing.get_args(models[0])
        if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
            yield from config_keys(annotation, key + ".")
        elif origin is list and args and inspect.isclass(args[0]) and issubclass(args[0], BaseModel):
            yield key
            yield from config_keys(args[0], key + ".")
        elif origin is dict and inspect.isclass(args[1]) and issubclass(args[1], BaseModel):
            yield from config_keys(args[1], key + ".NAME.")
        elif origin is dict:
            yield key + ".NAME"
        else:
            yield key


def example_keys() -> Iterator[str]:
    """Yield the dotted keys config.example.toml sets (uncommented ones)."""

    def walk(table: dict[str, Any], prefix: str) -> Iterator[str]:
        for name, value in table.items():
            if isinstance(value, dict):
                yield from walk(typing.cast("dict[str, Any]", value), prefix + name + ".")
            else:
                yield prefix + name

    yield from walk(tomllib.loads((ROOT / "config.example.toml").read_text(encoding="utf-8")), "")


def test_every_config_key_is_in_the_configuration_reference() -> None:
    text = read("configuration.md")
    keys = set(config_keys()) | set(example_keys())
    assert "storage.url" in keys and "approvals.keys.kid" in keys and "policy.actions.NAME.approval" in keys
    for key in sorted(keys):
        assert f"`{key}`" in text, f"config key {key} is missing from docs/configuration.md"


# -- verification reasons -------------------------------------------------------------------------


def test_every_verification_reason_is_in_the_auditor_guide() -> None:
    reasons: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        reasons |= set(re.findall(r'VerificationError\(\s*"([a-z_]+)"', path.read_text(encoding="utf-8")))
    assert {"bad_signature", "root_mismatch", "quorum_not_met"} <= reasons
    reasons |= set(typing.get_args(errors.VerificationReason))  # the pinned wire tokens
    text = section(read("auditor.md"), "Failure reasons")
    for reason in sorted(reasons):
        assert f"`{reason}`" in text, f"verification reason {reason} is missing from docs/auditor.md"


# -- links ----------------------------------------------------------------------------------------


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a markdown file (lower case, punctuation dropped, spaces to -)."""
    found: set[str] = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (match := re.match(r"#{1,6} (.*)", line)):
            found.add(re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-"))
    return found


@pytest.mark.parametrize("path", documents(), ids=lambda path: path.name)
def test_links_stay_inside_the_repository_and_lead_somewhere(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "../shared" not in text
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # a web address, not a file
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        assert resolved.is_relative_to(ROOT), f"{path.name} links outside the repository: {target}"
        assert resolved.exists(), f"{path.name} links to a missing file: {target}"
        if anchor and resolved.suffix == ".md":
            assert anchor in anchors(resolved), f"{path.name}: no heading for #{anchor} in {resolved.name}"


# -- the by-hand verifier of the auditor guide ------------------------------------------------------


def test_the_auditor_guides_verifier_accepts_a_real_receipt_and_refuses_a_changed_result(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    code = re.findall(r"```python\n(.*?)```", section(read("auditor.md"), "6. Without this tool"), flags=re.DOTALL)
    assert len(code) == 1
    script = tmp_path / "verify.py"
    script.write_text(code[0], encoding="utf-8")
    runtime = make_runtime()
    ctx = CallContext(tenant_id="default", run_id="docs")
    answers: list[Answer] = []
    for nonce in ("docs-0001", "docs-0002", "docs-0003"):
        answer = anyio.run(runtime.gate.call, "add", {"a": 2, "b": 40, "nonce": nonce}, ctx)
        assert isinstance(answer, Answer) and answer.status == "executed"
        answers.append(answer)
    keys, receipt, proof = tmp_path / "keys.json", tmp_path / "receipt.json", tmp_path / "proof.txt"
    keys.write_text(json.dumps({"keys": [{"public_key": _b64(runtime.server_key.public_raw)}]}))
    for answer in answers:
        entry = runtime.store.get_entry(answer.envelope["exec_id"])
        assert entry is not None
        receipt.write_text(json.dumps(answer.envelope))
        proof.write_text(runtime.ledger.proof_text(entry), encoding="utf-8")
        done = _run(script, keys, receipt, proof)
        assert done.returncode == 0, done.stderr
        assert f"included at {entry.seq} of checkpoint" in done.stdout
    receipt.write_text(json.dumps({**answers[-1].envelope, "result": {"sum": 43}}))
    assert _run(script, keys, receipt, proof).returncode != 0


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _run(script: Path, *args: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )
