"""A load-generating worker process for the HTTP figures (run by ``bench/run.py``, not by hand).

``python bench/loadgen.py CONFIG_JSON`` where the config is ``{"mode": "mcp" | "execute",
"targets": {NAME: URL}, "concurrency", "max_calls", "warmup", "nonce_prefix"}``. For every target
the worker connects ``concurrency`` clients (SDK ``mcp.Client`` over streamable HTTP, or one
``httpx.AsyncClient`` with a pool of ``concurrency`` connections) and warms each up, then prints
``ready``. Each stdin line ``go NAME SECONDS`` runs ``concurrency`` sequential loops against that
target until the time is up (or ``max_calls`` calls are done) and prints one JSON line:
``{"count", "errors", "elapsed", "latencies"}`` (seconds). End of input ends the worker.

Several workers released together give a figure its concurrency without one client process being
the bottleneck; alternating ``go`` lines between targets interleaves the configurations finely.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import anyio.to_thread
import httpx
from mcp import Client

Call = Callable[[str], Awaitable[bool]]
"""One call with a fresh nonce; returns whether it succeeded."""

TIMEOUT_SECONDS = 30.0


async def _mcp_callers(stack: AsyncExitStack, url: str, concurrency: int) -> list[Call]:
    callers: list[Call] = []
    for _ in range(concurrency):
        client = await stack.enter_async_context(Client(url, read_timeout_seconds=TIMEOUT_SECONDS))

        async def call(nonce: str, client: Client = client) -> bool:
            result = await client.call_tool("echo", {"msg": "hello world", "nonce": nonce})
            return not result.is_error

        callers.append(call)
    return callers


async def _execute_callers(stack: AsyncExitStack, url: str, concurrency: int) -> list[Call]:
    """``concurrency`` callers; ``url`` may list several servers separated by ``|`` (callers round robin)."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    http = await stack.enter_async_context(httpx.AsyncClient(limits=limits, timeout=TIMEOUT_SECONDS))
    action = "echo"
    if "#" in url:  # "URL#ACTION": call another action with echo's payload (e.g. the side-effecting echo_write)
        url, action = url.split("#", 1)

    def caller(target: str) -> Call:
        async def call(nonce: str) -> bool:
            body = {"action": action, "payload": {"msg": "hello world"}, "nonce": nonce}
            response = await http.post(target, json=body)
            return response.status_code == 200 and response.json()["status"] == "executed"

        return call

    urls = url.split("|")
    return [caller(urls[index % len(urls)]) for index in range(concurrency)]


async def run(config: dict[str, Any]) -> None:
    """Connect to every target, warm up, then answer ``go`` lines until end of input."""
    concurrency = int(config["concurrency"])
    prefix = str(config["nonce_prefix"])
    async with AsyncExitStack() as stack:
        make = _mcp_callers if config["mode"] == "mcp" else _execute_callers
        targets = {name: await make(stack, str(url), concurrency) for name, url in config["targets"].items()}

        async def warm(name: str, index: int, call: Call) -> None:
            for n in range(int(config["warmup"])):
                await call(f"{prefix}{name}-w{index}-{n:06d}")

        async with anyio.create_task_group() as tg:
            for name, callers in targets.items():
                for index, call in enumerate(callers):
                    tg.start_soon(warm, name, index, call)
        print("ready", flush=True)
        phase = 0
        while line := await anyio.to_thread.run_sync(sys.stdin.readline):
            _, name, seconds = line.split()
            phase += 1
            result = await _phase(targets[name], float(seconds), int(config["max_calls"]), f"{prefix}{phase}-")
            print(json.dumps(result), flush=True)


async def _phase(callers: list[Call], seconds: float, max_calls: int, prefix: str) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    budget = [max_calls]
    start = time.perf_counter()
    deadline = start + seconds

    async def loop(index: int, call: Call) -> None:
        nonlocal errors
        n = 0
        while budget[0] > 0 and time.perf_counter() < deadline:
            budget[0] -= 1
            n += 1
            begin = time.perf_counter()
            try:
                ok = await call(f"{prefix}{index}-{n:08d}")
            except Exception:
                ok = False
            latencies.append(time.perf_counter() - begin)
            errors += not ok

    with anyio.fail_after(seconds + TIMEOUT_SECONDS):
        async with anyio.create_task_group() as tg:
            for index, call in enumerate(callers):
                tg.start_soon(loop, index, call)
    return {"count": len(latencies), "errors": errors, "elapsed": time.perf_counter() - start, "latencies": latencies}


def main() -> int:
    anyio.run(run, json.loads(sys.argv[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
