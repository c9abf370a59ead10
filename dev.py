#!/usr/bin/env python3
"""Set up and run openexec-mcp with nothing but Python 3.11+ (standard library only).

    python3 dev.py serve [serve options]   create .venv, install, start the server
                                           (default: HTTP on 127.0.0.1:8000, SQLite, demo mode)
    python3 dev.py test [pytest options]   create .venv, install with test tools, run lint,
                                           the type checker and the whole test suite
    python3 dev.py bench [--quick]         run the benchmarks and print one markdown table

The virtual environment is re-installed only when pyproject.toml changes. On PostgreSQL: when
``OPENEXEC_TEST_POSTGRES_URL`` is unset and PostgreSQL server binaries are on the machine,
``test`` starts a throw-away cluster in a temporary directory for the PostgreSQL tests.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".openexec-installed"


def ensure_venv(extras: str) -> None:
    """Create ``.venv`` and install the project (editable) with ``extras`` when out of date."""
    if sys.version_info < (3, 11):
        sys.exit(f"openexec-mcp needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    def stamp(name: str) -> str:
        return hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + name.encode()).hexdigest()

    wanted = stamp(extras)
    # The dev extra includes the postgres one: an environment set up for the tests also serves.
    if STAMP.exists() and STAMP.read_text() in (wanted, stamp("dev")):
        return
    if not PYTHON.exists():
        print("dev.py: creating .venv", file=sys.stderr)
        venv.EnvBuilder(with_pip=True, clear=False).create(VENV)
    print(f"dev.py: installing openexec-mcp[{extras}] into .venv", file=sys.stderr)
    pip = [str(PYTHON), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "-e", f".[{extras}]"], check=True, cwd=ROOT)
    STAMP.write_text(wanted)


def run(command: list[str], env: dict[str, str] | None = None) -> int:
    """Run a command from the repository root; return its exit code."""
    return subprocess.run(command, cwd=ROOT, env=env).returncode


def serve(args: list[str]) -> int:
    """Start the server; with no options, HTTP on 127.0.0.1:8000."""
    ensure_venv("postgres")
    options = args or ["--transport", "http", "--host", "127.0.0.1", "--port", "8000"]
    os.execv(str(BIN / "openexec-mcp"), [str(BIN / "openexec-mcp"), "serve", *options])  # noqa: S606
    return 0  # not reached


def test(args: list[str]) -> int:
    """Lint, type-check and run every test. Exit non-zero on any failure (pytest's 5 included)."""
    ensure_venv("dev")
    steps = [
        ("ruff", [str(BIN / "ruff"), "check", "openexec_mcp", "actions", "tests", "bench", "dev.py"]),
        ("pyright", [str(BIN / "pyright")]),  # strict for the package; tests and bench too (pyproject)
        ("import-linter", [str(BIN / "lint-imports"), "--no-cache"]),  # the layers and the pure core (pyproject)
    ]
    for name, command in steps:
        print(f"dev.py: {name}", file=sys.stderr, flush=True)
        if run(command) != 0:
            print(f"dev.py: {name} failed", file=sys.stderr)
            return 1
    env = dict(os.environ)
    with _postgres(env):
        code = run([str(PYTHON), "-m", "pytest", *args], env=env)
    if code == 5:
        print("dev.py: pytest collected no tests", file=sys.stderr)
    return code


def bench(args: list[str]) -> int:
    """Run the benchmarks (``--quick`` for the CI smoke mode)."""
    ensure_venv("dev")
    return run([str(PYTHON), str(ROOT / "bench" / "run.py"), *args])


class _postgres:
    """Start a temporary PostgreSQL cluster for the tests when one is available and none is given."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.stop: list[str] | None = None

    def __enter__(self) -> None:
        if self.env.get("OPENEXEC_TEST_POSTGRES_URL"):
            return
        script = ROOT / ".ci" / "postgres.sh"
        if not script.exists():
            return
        result = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True, cwd=ROOT)
        url = result.stdout.strip().splitlines()[-1] if result.returncode == 0 and result.stdout.strip() else ""
        if url.startswith("postgresql://"):
            self.env["OPENEXEC_TEST_POSTGRES_URL"] = url
            self.stop = ["bash", str(script), "stop"]
        else:
            print(f"dev.py: no PostgreSQL for the tests ({result.stderr.strip()[-200:]})", file=sys.stderr)

    def __exit__(self, *exc: object) -> None:
        if self.stop:
            subprocess.run(self.stop, cwd=ROOT, capture_output=True)


COMMANDS = {"serve": serve, "test": test, "bench": bench}


def main() -> int:
    """Dispatch ``dev.py COMMAND [args]``."""
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 2
    return COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
