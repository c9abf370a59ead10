"""Figure 7 (issue 11): a gated call through a stdio upstream against the same upstream called directly.

Both sides are driven by the same SDK client, sequentially, in alternating blocks whose order
rotates. The upstream is ``bench/bare_server.py stdio`` (the ungated ``echo``): called directly it
is the baseline; through ``openexec-mcp serve`` with ``[[upstreams]] name = "bare"`` it is
``bare.echo``, a guarded tool (nonce claim, policy, forwarding over a second stdio hop, signed
receipt, ledger append). ``echo`` declares its own ``nonce`` argument, so the gate's nonce rides
``_meta["dev.openexec/nonce"]``, which is how a guarded tool with its own ``nonce`` is called.

Reported: the ratio of the medians (gated / direct calls per second, one run each; goal ≥ 0.7) and
the added latency per call in milliseconds (``1/gated - 1/direct``).
"""

from __future__ import annotations

import functools
import json
import time
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from bench.harness import REPO_DIR, Row, Samples, Workspace, bare_command, gated_command, server_env, verdict

CALL_TIMEOUT_SECONDS = 30.0
NONCE_META = "dev.openexec/nonce"


def upstream_config(path: Path) -> Path:
    """Write the gated server's config: one stdio upstream, the bare echo server."""
    bare = bare_command("stdio")
    text = (
        'mode = "demo"\n\n[[upstreams]]\nname = "bare"\n'
        f"command = {json.dumps(bare[0])}\nargs = {json.dumps(bare[1:])}\n"
    )
    path.write_text(text)
    return path


async def _rates(
    commands: dict[str, tuple[list[str], dict[str, str], Path]], *, calls: int, blocks: int, warmup: int
) -> dict[str, float]:
    per_block = max(1, calls // blocks)
    seconds = dict.fromkeys(commands, 0.0)
    done = dict.fromkeys(commands, 0)
    tools = {"direct": "echo", "gated": "bare.echo"}
    async with AsyncExitStack() as stack:
        clients: dict[str, Client] = {}
        for name, (command, env, log) in commands.items():
            params = StdioServerParameters(command=command[0], args=command[1:], env=env, cwd=str(REPO_DIR))
            errlog = stack.enter_context(log.open("w"))
            clients[name] = await stack.enter_async_context(
                Client(stdio_client(params, errlog=errlog), read_timeout_seconds=CALL_TIMEOUT_SECONDS)
            )
            for n in range(warmup):
                await _call(clients[name], tools[name], f"warm-{n:08d}")
        names = list(commands)
        for block in range(blocks):
            shift = block % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                for _ in range(per_block):
                    await _call(clients[name], tools[name], f"bench-{done[name]:08d}")
                    done[name] += 1
                seconds[name] += time.perf_counter() - start
    return {name: done[name] / seconds[name] for name in commands}


async def _call(client: Client, tool: str, nonce: str) -> None:
    result = await client.call_tool(tool, {"msg": "hello world", "nonce": nonce}, meta={NONCE_META: nonce})
    if result.is_error:
        raise RuntimeError(f"{tool} failed: {result.structured_content or result.content}")


def figure_upstream(plan: object, ws: Workspace) -> list[Row]:
    """Run the figure (``plan``: ``bench.figures.Plan``; its stdio counts are used)."""
    calls: int = getattr(plan, "stdio_calls", 1000)
    blocks: int = getattr(plan, "blocks", 10)
    warmup: int = getattr(plan, "stdio_warmup", 50)
    runs: int = getattr(plan, "runs", 1)
    rates = Samples()
    for _ in range(runs):
        work = ws.fresh_dir("upstream")
        gated_env = server_env(work / "state")
        gated_env["OPENEXEC_CONFIG"] = str(upstream_config(work / "config.toml"))
        commands = {
            "direct": (bare_command("stdio"), server_env(None), work / "direct.log"),
            "gated": (gated_command(), gated_env, work / "gated.log"),
        }
        measured = anyio.run(functools.partial(_rates, commands, calls=calls, blocks=blocks, warmup=warmup))
        for name, rate in measured.items():
            rates.add(name, rate)
    ratio = rates.paired_ratio("gated", "direct")
    added_ms = (1 / rates.median("gated") - 1 / rates.median("direct")) * 1000
    return [
        Row(
            "7. stdio upstream, gated vs direct calls/s",
            f"{rates.median('gated'):,.0f}/s",
            f"{rates.median('direct'):,.0f}/s",
            f"{ratio:.2f}",
            "≥ 0.70",
            verdict(ratio >= 0.7),
        ),
        Row("7. stdio upstream, added latency per call", f"{added_ms:.2f} ms", "", "", "reported", ""),
    ]


if __name__ == "__main__":
    import argparse
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.harness import render_table

    parser = argparse.ArgumentParser(description="Figure 7: a gated stdio upstream call against a direct one.")
    parser.add_argument("--calls", type=int, default=1000, help="measured calls per side and run (default 1000)")
    parser.add_argument("--blocks", type=int, default=10, help="alternating blocks per run (default 10)")
    parser.add_argument("--warmup", type=int, default=50, help="unmeasured calls per side first (default 50)")
    parser.add_argument("--runs", type=int, default=1, help="runs; the figure is their median (default 1)")
    options = parser.parse_args()
    plan = type(
        "Plan",
        (),
        {"runs": options.runs, "stdio_calls": options.calls, "blocks": options.blocks, "stdio_warmup": options.warmup},
    )()
    ws = Workspace()
    try:
        print(render_table(figure_upstream(plan, ws)))
    finally:
        ws.cleanup()
    sys.exit(0)
