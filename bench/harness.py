"""Shared plumbing for the benchmarks: private state dirs, server processes, statistics, table rows.

Every server runs as a child process of the benchmark, bound to 127.0.0.1, with its own fresh
``OPENEXEC_STATE_DIR`` under one temporary root that is deleted at the end; nothing reads or
writes the user's state directory. Every wait has a deadline, and every child is terminated
(then killed) on the way out.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
PYTHON = sys.executable
READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0


# -- state and environment ----------------------------------------------------------------------


class Workspace:
    """One temporary root for a whole benchmark invocation; each server gets a fresh subdirectory."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="openexec-bench-"))
        self._count = 0

    def fresh_dir(self, label: str) -> Path:
        """Return a new, empty directory under the root."""
        self._count += 1
        path = self.root / f"{self._count:03d}-{label}"
        path.mkdir(mode=0o700)
        return path

    def cleanup(self) -> None:
        """Delete the root and everything under it."""
        shutil.rmtree(self.root, ignore_errors=True)


def server_env(state_dir: Path | None, *, synchronous: str = "full") -> dict[str, str]:
    """Environment of a server child: the caller's, minus any ``OPENEXEC_*`` / ``CLAWSHIELD_*``.

    Args:
        state_dir: The server's private state dir (``None`` for the baselines, which keep no state).
        synchronous: SQLite ``synchronous`` setting, ``full`` or ``normal``.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENEXEC_", "CLAWSHIELD_"))}
    env["PYTHONUNBUFFERED"] = "1"
    if state_dir is not None:
        env["OPENEXEC_STATE_DIR"] = str(state_dir)
        env["OPENEXEC_MODE"] = "demo"  # auto approval: the benchmark measures the gate, not a human
        env["OPENEXEC_STORAGE__SQLITE_SYNCHRONOUS"] = synchronous
    return env


def gated_command(*serve_args: str) -> list[str]:
    """``python -m openexec_mcp serve ...``."""
    return [PYTHON, "-m", "openexec_mcp", "serve", *serve_args]


def bare_command(*args: str) -> list[str]:
    """``python bench/bare_server.py ...``."""
    return [PYTHON, str(BENCH_DIR / "bare_server.py"), *args]


def with_pid_file(command: Sequence[str], pid_file: Path) -> list[str]:
    """Wrap ``command`` so that it writes its PID to ``pid_file`` and then ``exec``s (same PID)."""
    script = (
        "import os, sys\n"
        "with open(sys.argv[1], 'w') as f:\n"
        "    f.write(str(os.getpid()))\n"
        "os.execv(sys.argv[2], sys.argv[2:])"
    )
    return [PYTHON, "-c", script, str(pid_file), *command]


# -- processes ----------------------------------------------------------------------------------


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate a child, wait for it, kill it if it does not stop."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_SECONDS)


@dataclass
class HttpServer:
    """A server child listening on ``port``."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""


@contextlib.contextmanager
def http_server(command_for_port: Sequence[str], env: dict[str, str], log: Path) -> Generator[HttpServer, None, None]:
    """Start an HTTP server child (``{port}`` in the command is replaced), wait until it accepts."""
    port = free_port()
    command = [part.replace("{port}", str(port)) for part in command_for_port]
    with log.open("wb") as log_handle:
        process = subprocess.Popen(
            command, env=env, cwd=REPO_DIR, stdin=subprocess.DEVNULL, stdout=log_handle, stderr=log_handle
        )
    server = HttpServer(process, port, log)
    try:
        wait_accepting(server)
        yield server
    finally:
        stop(process)


def wait_accepting(server: HttpServer) -> None:
    """Poll until the port accepts connections (uvicorn binds after the app's start-up has run)."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}: {server.log_tail()}")
        try:
            with socket.create_connection((HOST, server.port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)  # bounded readiness poll
    raise RuntimeError(f"server not accepting after {READY_TIMEOUT_SECONDS}s: {server.log_tail()}")


def cpu_seconds(pid: int) -> float | None:
    """Return the CPU time (user + system, all threads) a live process has used, or ``None``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # Fields 14 and 15 of proc(5) (utime, stime), counted after the ")" that ends the command name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_bytes(pid: int) -> int | None:
    """Return the peak resident set size (``VmHWM``) of a live process, in bytes, or ``None``."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


# -- statistics and the table -------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return statistics.median(values)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1) of a non-empty sequence."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


def rotated(items: Sequence[str], run: int) -> list[str]:
    """``items`` rotated by ``run``: interleaves configurations so none always goes first."""
    shift = run % len(items)
    return [*items[shift:], *items[:shift]]


@dataclass
class Row:
    """One row of the result table."""

    figure: str
    value: str
    baseline: str = ""
    ratio: str = ""
    goal: str = ""
    met: str = ""


@dataclass
class Samples:
    """Per-run values of several configurations measured in the same runs."""

    values: dict[str, list[float]] = field(default_factory=dict[str, list[float]])

    def add(self, config: str, value: float) -> None:
        self.values.setdefault(config, []).append(value)

    def median(self, config: str) -> float:
        return median(self.values[config])

    def paired_ratio(self, config: str, baseline: str) -> float:
        """Median of the per-run ratios ``config / baseline`` (runs are paired, so noise cancels)."""
        pairs = zip(self.values[config], self.values[baseline], strict=True)
        return median([a / b for a, b in pairs if b > 0])


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}/s"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} µs"


def fmt_mib(value: float) -> str:
    return f"{value / (1024 * 1024):.1f} MiB"


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def render_table(rows: Sequence[Row]) -> str:
    """Return the rows as one markdown table."""
    header = ["figure", "openexec", "baseline", "ratio", "goal", "met?"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for row in rows:
        cells = [row.figure, row.value, row.baseline, row.ratio, row.goal, row.met]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)
