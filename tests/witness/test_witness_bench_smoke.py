"""The witnessing benchmark still runs: ``bench/witness.py --quick`` exits 0 and prints its rows.

A smoke test, not a timed test: it never asserts a speed or a ratio.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_witness_benchmark_runs_and_the_witnesses_cosigned_during_the_load() -> None:
    completed = subprocess.run(
        [sys.executable, str(REPO / "bench" / "witness.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        cwd=REPO,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "HTTP /execute calls/s with two witnesses" in completed.stdout
    assert "tree size cosigned by both witnesses" in completed.stdout
