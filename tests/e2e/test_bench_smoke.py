"""The benchmarks still run: ``bench/run.py --quick`` exits 0 and prints every figure's rows.

This is a smoke test, not a timed test: it never asserts a speed or a ratio.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

EXPECTED_ROWS = [
    "1. stdio, sequential calls/s, SQLite synchronous=full",
    "1. stdio, sequential calls/s, SQLite synchronous=normal",
    "2. streamable HTTP, 16 clients, calls/s",
    "2. streamable HTTP, 16 clients, p50",
    "2. streamable HTTP, 16 clients, p99",
    "3. POST /execute c=1, req/s",
    "3. POST /execute c=1, p50",
    "3. POST /execute c=1, p99",
    "3. POST /execute c=16, req/s",
    "3. POST /execute c=16, p50",
    "3. POST /execute c=16, p99",
    "4. scale, ledger 100: calls/s (stdio, full) and peak RSS",
    "4. scale, ledger 1,000: calls/s",
    "4. scale, ledger 1,000: peak RSS",
    "5. in-process call via in-memory SDK Client, per call",
    "5. phase: MCP SDK dispatch",
    "5. phase: SDK client: outputSchema validation",
    "5. phase: RFC 8785 canonicalization",
    "5. phase: gate step 4: nonce claim",
    "5. phase: gate step 5: handler",
    "5. phase: Ed25519 signature",
    "5. phase: COMMIT",
]


@pytest.mark.slow
def test_quick_benchmark_run_prints_every_figure() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENEXEC_", "CLAWSHIELD_"))}
    completed = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    rows = [line for line in completed.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| figure | openexec | baseline | ratio | goal | met? |")
    labels = [row.split(" | ")[0].removeprefix("| ") for row in rows[1:]]
    for expected in EXPECTED_ROWS:
        assert any(label.startswith(expected) for label in labels), f"missing row {expected!r} in {labels}"
    assert not any("FAILED" in row or "error" in row.split(" | ")[1] for row in rows[1:])
