"""The two ways the benchmarks drive servers, both interleaving the configurations of one run.

``stdio_rates`` spawns several servers at once through the SDK's own stdio transport
(``mcp.Client`` over ``stdio_client(StdioServerParameters(...))``) and makes sequential ``echo``
calls in short blocks, alternating between the servers, so that a burst of load from another
process on this shared machine hits every configuration alike. ``LoadFleet`` does the same for
HTTP with ``bench/loadgen.py`` worker processes connected to every target at once and released
together, phase by phase.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from bench.harness import (
    BENCH_DIR,
    PYTHON,
    REPO_DIR,
    cpu_seconds,
    peak_rss_bytes,
    percentile,
    stop,
    with_pid_file,
)

CALL_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class StdioServer:
    """How to start one configuration: the command, its environment, its stderr log, its PID file.

    The command is started through ``with_pid_file`` (same PID), so that the server process's CPU
    time and peak RSS can be read from ``/proc``.
    """

    command: list[str]
    env: dict[str, str]
    log: Path
    pid_file: Path
    tool: str = "echo"
    """The tool called (``echo``; ``echo_write`` for the side-effecting figure)."""


@dataclass(frozen=True)
class StdioResult:
    """Sequential calls per second; the server's CPU seconds per call and peak RSS in bytes (0: unknown)."""

    rate: float
    cpu_per_call: float
    peak_rss: int


async def stdio_rates(
    servers: dict[str, StdioServer], *, calls: int, blocks: int, warmup: int, time_limit: float
) -> dict[str, StdioResult]:
    """Start every server, then time ``calls`` sequential ``echo`` calls on each, in ``blocks`` rounds.

    Each round runs ``calls // blocks`` calls on every server, in an order that rotates from round
    to round. The whole measurement stops after ``time_limit`` seconds, whatever was done by then.
    """
    per_block = max(1, calls // blocks)
    seconds = dict.fromkeys(servers, 0.0)
    done = dict.fromkeys(servers, 0)
    names = list(servers)
    with anyio.fail_after(time_limit + 4 * CALL_TIMEOUT_SECONDS):
        async with AsyncExitStack() as stack:
            clients: dict[str, Client] = {}
            for name, server in servers.items():
                command = with_pid_file(server.command, server.pid_file)
                params = StdioServerParameters(command=command[0], args=command[1:], env=server.env, cwd=str(REPO_DIR))
                errlog = stack.enter_context(server.log.open("w"))
                client = Client(stdio_client(params, errlog=errlog), read_timeout_seconds=CALL_TIMEOUT_SECONDS)
                clients[name] = await stack.enter_async_context(client)
                for n in range(warmup):
                    await _echo(clients[name], f"warm-{n:08d}", server.tool)
            pids = {name: int(server.pid_file.read_text()) for name, server in servers.items()}
            cpu_before = {name: cpu_seconds(pid) or 0.0 for name, pid in pids.items()}
            deadline = time.perf_counter() + time_limit
            for block in range(blocks):
                if time.perf_counter() > deadline:
                    break
                shift = block % len(names)
                for name in names[shift:] + names[:shift]:
                    start = time.perf_counter()
                    for _ in range(per_block):
                        await _echo(clients[name], f"bench-{done[name]:08d}", servers[name].tool)
                        done[name] += 1
                    seconds[name] += time.perf_counter() - start
            cpu = {name: (cpu_seconds(pid) or 0.0) - cpu_before[name] for name, pid in pids.items()}
            rss = {name: peak_rss_bytes(pid) or 0 for name, pid in pids.items()}
    return {name: StdioResult(done[name] / seconds[name], cpu[name] / done[name], rss[name]) for name in servers}


async def _echo(client: Client, nonce: str, tool: str = "echo") -> None:
    result = await client.call_tool(tool, {"msg": "hello world", "nonce": nonce})
    if result.is_error:
        raise RuntimeError(f"echo failed: {result.structured_content or result.content}")


@dataclass
class LoadResult:
    """Merged measurements of one target: calls/s, latency percentiles and server CPU in seconds, errors."""

    count: int = 0
    seconds: float = 0.0
    errors: int = 0
    cpu_seconds: float = 0.0
    latencies: list[float] | None = None

    @property
    def cpu_per_call(self) -> float:
        return self.cpu_seconds / max(self.count, 1)

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    @property
    def p50(self) -> float:
        return percentile(self.latencies or [0.0], 0.50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies or [0.0], 0.99)


class _Worker:
    def __init__(self, config: dict[str, Any], log: Path) -> None:
        with log.open("ab") as log_handle:
            self.process = subprocess.Popen(
                [PYTHON, str(BENCH_DIR / "loadgen.py"), json.dumps(config)],
                cwd=REPO_DIR,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_handle,
            )
        self._buffer = bytearray()
        self.log = log

    def read_line(self, timeout: float) -> str:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"load worker silent for {timeout}s: {self.log.read_text()[-2000:]}")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"load worker exited: {self.log.read_text()[-2000:]}")
                self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        return line.decode()

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()


class LoadFleet:
    """``concurrency`` looping clients per target, spread over ``processes`` worker processes.

    Args:
        mode: ``mcp`` (SDK clients over streamable HTTP) or ``execute`` (``POST /execute``).
        targets: Name → ``/mcp`` or ``/execute`` URL on 127.0.0.1.
    """

    def __init__(
        self,
        mode: str,
        targets: dict[str, str],
        *,
        concurrency: int,
        processes: int,
        warmup: int,
        log: Path,
        prefix: str,
    ) -> None:
        processes = max(1, min(processes, concurrency))
        shares = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
        self.workers: list[_Worker] = []
        try:
            for index, share in enumerate(shares):
                config = {
                    "mode": mode,
                    "targets": targets,
                    "concurrency": share,
                    "max_calls": 1_000_000,
                    "warmup": warmup,
                    "nonce_prefix": f"{prefix}p{index}-",
                }
                self.workers.append(_Worker(config, log))
            for worker in self.workers:
                if (line := worker.read_line(60.0)) != "ready":
                    raise RuntimeError(f"load worker said {line[:200]!r}")
        except BaseException:
            self.close()
            raise

    def phase(self, target: str, seconds: float, into: LoadResult, server_pid: int | None = None) -> None:
        """Release every worker on ``target`` for ``seconds``; add what they measured to ``into``.

        With ``server_pid``, the server process's CPU time over the phase is added as well.
        """
        cpu_before = cpu_seconds(server_pid) if server_pid is not None else None
        for worker in self.workers:
            worker.send(f"go {target} {seconds}")
        results = [json.loads(worker.read_line(seconds + 2 * CALL_TIMEOUT_SECONDS)) for worker in self.workers]
        into.count += sum(result["count"] for result in results)
        into.seconds += max(result["elapsed"] for result in results)
        into.errors += sum(result["errors"] for result in results)
        cpu_after = cpu_seconds(server_pid) if server_pid is not None else None
        if cpu_before is not None and cpu_after is not None:
            into.cpu_seconds += cpu_after - cpu_before
        into.latencies = (into.latencies or []) + [x for result in results for x in result["latencies"]]

    def close(self) -> None:
        for worker in self.workers:
            stop(worker.process)  # type: ignore[arg-type]

    def __enter__(self) -> LoadFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
