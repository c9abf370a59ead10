"""A load-generating worker process for the HTTP figures (run by ``bench/run.py``, not by hand).

``python bench/loadgen.py CONFIG_JSON`` where the config is
``{"mode": "mcp" | "execute", "url", "concurrency", "duration_seconds", "max_calls", "warmup",
"nonce_prefix"}``. The worker connects ``concurrency`` clients (SDK ``mcp.Client`` over
streamable HTTP, or one ``httpx.AsyncClient`` with a pool of ``concurrency`` connections),
warms each up, prints ``ready``, waits for one line on stdin, then runs ``concurrency``
sequential loops until ``duration_seconds`` pass or ``max_calls`` calls are done, and prints one
JSON line: ``{"count", "errors", "elapsed", "latencies"}`` (seconds). Several workers started
together and released at once give the figures their concurrency without one client process
being the bottleneck.
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
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    http = await stack.enter_async_context(httpx.AsyncClient(limits=limits, timeout=TIMEOUT_SECONDS))

    async def call(nonce: str) -> bool:
        response = await http.post(url, json={"action": "echo", "payload": {"msg": "hello world"}, "nonce": nonce})
        return response.status_code == 200 and response.json()["status"] == "executed"

    return [call] * concurrency


async def run(config: dict[str, Any]) -> dict[str, Any]:
    """Connect, warm up, wait for the go line, load, and return the measurements."""
    concurrency = int(config["concurrency"])
    prefix = str(config["nonce_prefix"])
    latencies: list[float] = []
    errors = 0
    async with AsyncExitStack() as stack:
        make = _mcp_callers if config["mode"] == "mcp" else _execute_callers
        callers = await make(stack, str(config["url"]), concurrency)

        async def warm(index: int, call: Call) -> None:
            for n in range(int(config["warmup"])):
                await call(f"{prefix}w{index}-{n:06d}")

        async with anyio.create_task_group() as tg:
            for index, call in enumerate(callers):
                tg.start_soon(warm, index, call)
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)

        budget = [int(config["max_calls"])]
        start = time.perf_counter()
        deadline = start + float(config["duration_seconds"])

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

        with anyio.fail_after(float(config["duration_seconds"]) + TIMEOUT_SECONDS):
            async with anyio.create_task_group() as tg:
                for index, call in enumerate(callers):
                    tg.start_soon(loop, index, call)
        elapsed = time.perf_counter() - start
    return {"count": len(latencies), "errors": errors, "elapsed": elapsed, "latencies": latencies}


def main() -> int:
    config = json.loads(sys.argv[1])
    result = anyio.run(run, config)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
