"""Run every benchmark of issue 6 and print one markdown table.

    python bench/run.py                 # all figures, medians over 5 runs (about 10 to 15 minutes)
    python bench/run.py --runs 3        # fewer runs
    python bench/run.py --only stdio    # one figure: stdio, http, execute, scale, profile
    python bench/run.py --quick         # CI smoke mode: tiny counts, under a minute, proves the scripts work

Every figure is a ratio against a baseline measured in the same run (``bench/bare_server.py``:
the same SDK and the same ``echo`` with no gate). Servers run as children on 127.0.0.1, each in a
fresh temporary state dir; progress goes to stderr, the table to stdout. The exit code is 0 when
every figure was measured, whether or not its goal was met, and 1 when a figure failed to run.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform
import sqlite3
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for ``bench.*``

from bench.figures import FIGURES, Plan
from bench.harness import Row, Workspace, render_table


def machine() -> str:
    """One line naming the machine, for the README."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI smoke mode: tiny iteration counts")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure; medians are reported (default 5)")
    parser.add_argument("--only", choices=sorted(FIGURES), action="append", help="run only this figure (repeatable)")
    parser.add_argument(
        "--prefill-cache",
        type=Path,
        default=None,
        help="keep the scale figure's pre-filled ledgers in this directory and reuse them next time",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    plan = Plan.quick() if args.quick else Plan(runs=5)
    if args.runs is not None:
        plan = dataclasses.replace(plan, runs=max(1, args.runs))
    if args.prefill_cache is not None:
        args.prefill_cache.mkdir(parents=True, exist_ok=True)
        plan = dataclasses.replace(plan, prefill_cache=args.prefill_cache.resolve())
    names = args.only or list(FIGURES)
    # The in-process figures (scale's pre-fill, profile) build runtimes; their demo-mode warning is expected.
    logging.getLogger("openexec_mcp").setLevel(logging.ERROR)
    rows: list[Row] = []
    failed = False
    workspace = Workspace()
    began = time.monotonic()
    try:
        for name in names:
            print(f"figure {name} ...", file=sys.stderr, flush=True)
            start = time.monotonic()
            try:
                rows.extend(FIGURES[name](plan, workspace))
            except Exception:
                failed = True
                traceback.print_exc()
                rows.append(Row(f"{name}: FAILED (see stderr)", "error"))
            print(f"figure {name}: {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)
    finally:
        workspace.cleanup()
    print(render_table(rows))
    print()
    print(
        f"_{'quick smoke run' if args.quick else f'medians of {plan.runs} runs'} in "
        f"{time.monotonic() - began:.0f} s on {machine()}._"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
