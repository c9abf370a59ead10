"""The evidence-bundle conformance cases of ``tests/conformance/bundles/`` (SPEC §14) checked by the CLI.

Each case directory holds a bundle, the trusted server key and witnesses, and the expected verdict;
``_fail`` in its name means ``openexec-mcp bundle verify`` must exit 1 with the reason of its
``expected.json``. ``make_bundle_cases.py`` generates them; a test pins the committed bytes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from oe_testing.cosignature_verifier import IndependentVerificationError, verify_cosignature
from oe_testing.processes import run_cli

from openexec_mcp.cli import main
from openexec_mcp.core.encoding import b64decode_strict

CONFORMANCE = Path(__file__).parents[1] / "conformance"
CASES = sorted(path for path in (CONFORMANCE / "bundles").iterdir() if path.is_dir())


def verify_args(case: Path) -> list[str]:
    expected = json.loads((case / "expected.json").read_text())
    witnesses = [arg for line in (case / "witnesses.txt").read_text().splitlines() for arg in ("--witness", line)]
    return [
        "bundle",
        "verify",
        str(case / "bundle.json"),
        "--public-key",
        str(case / "public_key.pem"),
        *witnesses,
        "--quorum",
        str(expected["quorum"]),
    ]


def test_there_are_passing_and_failing_bundle_cases_for_each_attack() -> None:
    names = {case.name for case in CASES}
    for attack in ("wrong_key_cosignature", "quorum_not_met", "receipt_flipped", "proof_for_another_checkpoint"):
        assert f"{attack}_fail" in names
    assert sum(name.endswith("_pass") for name in names) >= 2


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bundle_conformance_case(case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = json.loads((case / "expected.json").read_text())
    assert expected["valid"] == (not case.name.endswith("_fail"))
    code = main(verify_args(case))
    out = capsys.readouterr().out
    if expected["valid"]:
        assert code == 0, out
        assert out.startswith("OK "), out
    else:
        assert code == 1, out
        assert out.startswith(f"INVALID {expected['reason']}"), out


@pytest.mark.parametrize("name", ["witnessed_pass", "wrong_key_cosignature_fail", "quorum_not_met_fail"])
def test_the_independent_verifier_agrees_on_the_cosignatures(name: str) -> None:
    case = CONFORMANCE / "bundles" / name
    note = json.loads((case / "bundle.json").read_text())["checkpoint"]
    verdicts = []
    for line in (case / "witnesses.txt").read_text().splitlines():
        witness, key = line.split("=", 1)
        try:
            verify_cosignature(note, witness, b64decode_strict(key))
            verdicts.append(True)
        except IndependentVerificationError:
            verdicts.append(False)
    assert all(verdicts) == name.endswith("_pass")


def test_a_bundle_verifies_in_a_subprocess_and_unreadable_input_exits_2(tmp_path: Path) -> None:
    case = CONFORMANCE / "bundles" / "witnessed_pass"
    args = verify_args(case)
    completed = run_cli(*args)
    assert completed.returncode == 0, completed
    garbage = tmp_path / "bundle.json"
    garbage.write_text("{not json")
    args[2] = str(garbage)
    assert main(args) == 2


def test_the_committed_bundle_cases_are_what_the_generator_makes() -> None:
    completed = subprocess.run(
        [sys.executable, str(CONFORMANCE / "make_bundle_cases.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
