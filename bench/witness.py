"""Does witnessing cost the calls anything? calls/s with and without two witnesses, in one run (SPEC §14).

    python bench/witness.py                # 7 runs of 40 blocks of 20 calls per configuration (about 2 minutes)
    python bench/witness.py --quick        # CI smoke mode: a few seconds, proves the script works

Two HTTP servers are up at once on 127.0.0.1, each in a fresh state dir: ``plain`` (no witnesses)
and ``witnessed`` (``[[ledger.witnesses]]`` = two ``openexec-mcp witness serve`` children, quorum 2,
the default ``witness_interval_seconds`` of 1 s, so a checkpoint is signed and submitted every second
while the load runs). One client (keep-alive) sends ``POST /execute`` of ``echo`` back to back, in
short blocks that alternate between the two servers (the order rotating each block), so a burst of
load from another process on this shared machine falls on both sides; a run's rate per server is
its calls over the time spent in its blocks, and the ratio reported is the median of the per-run
ratios ``witnessed / plain``. The run also checks that the witnesses did cosign during
the load (else the figure would be meaningless). Prints a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for ``bench.*``

from bench.harness import (
    PYTHON,
    Row,
    Samples,
    Workspace,
    fmt_rate,
    free_port,
    gated_command,
    http_server,
    render_table,
    rotated,
    server_env,
    stop,
    verdict,
)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def witness(workspace: Workspace, name: str, log_public: str) -> Iterator[tuple[str, str]]:
    """Start one witness child; yield its URL and ``public_key`` (base64)."""
    directory = workspace.fresh_dir(name.split(".")[0])
    key = directory / "key.pem"
    printed = subprocess.run(
        [PYTHON, "-m", "openexec_mcp", "witness", "key", "--key", str(key), "--name", name],
        capture_output=True,
        text=True,
        check=True,
        env=server_env(None),
        stdin=subprocess.DEVNULL,
    )
    public = printed.stdout.splitlines()[0].split("=", 1)[1]
    port = free_port()
    with (directory / "witness.log").open("wb") as log:
        process = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "openexec_mcp",
                "witness",
                "serve",
                "--key",
                str(key),
                "--name",
                name,
                "--log",
                f"openexec-mcp={log_public}",
                "--port",
                str(port),
            ],
            env=server_env(None),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"witness {name} did not start") from None
                time.sleep(0.05)  # bounded readiness poll
        yield url, public
    finally:
        stop(process)


def block(client: httpx.Client, base_url: str, calls: int) -> float:
    """Send ``calls`` ``echo`` calls back to back; return the seconds they took."""
    start = time.perf_counter()
    for _ in range(calls):
        body = {"action": "echo", "payload": {"n": 1}, "nonce": uuid.uuid4().hex}
        answer = client.post(base_url + "/execute", json=body)
        if answer.status_code != 200:
            raise RuntimeError(f"call failed: {answer.status_code} {answer.text[:200]}")
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI smoke mode")
    parser.add_argument("--runs", type=int, default=None, help="runs (default 5; 1 with --quick)")
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 7)
    blocks, calls = (6, 10) if args.quick else (40, 20)
    workspace = Workspace()
    samples = Samples()
    try:
        from openexec_mcp.keystore import load_or_create_server_key

        states = {"plain": workspace.fresh_dir("plain"), "witnessed": workspace.fresh_dir("witnessed")}
        log_public = base64.b64encode(load_or_create_server_key(states["witnessed"]).public_raw).decode()
        with contextlib.ExitStack() as stack:
            witnesses = [stack.enter_context(witness(workspace, f"w{i}.bench.example/w", log_public)) for i in (1, 2)]
            config = states["witnessed"] / "server.toml"
            config.write_text(
                "[ledger]\nwitness_interval_seconds = 1.0\n\n"
                + "".join(
                    f'[[ledger.witnesses]]\nname = "w{i}.bench.example/w"\nurl = "{url}"\npublic_key = "{public}"\n\n'
                    for i, (url, public) in enumerate(witnesses, start=1)
                )
            )
            servers = {
                "plain": stack.enter_context(
                    http_server(
                        gated_command("--transport", "http", "--port", "{port}"),
                        server_env(states["plain"]),
                        states["plain"] / "server.log",
                    )
                ),
                "witnessed": stack.enter_context(
                    http_server(
                        gated_command("--config", str(config), "--transport", "http", "--port", "{port}"),
                        server_env(states["witnessed"]),
                        states["witnessed"] / "server.log",
                    )
                ),
            }
            with httpx.Client(timeout=30) as client:
                for name, server in servers.items():
                    block(client, server.base_url, 30)  # warm-up
                    _log(f"warm: {name}")
                for run in range(runs):
                    spent = {"plain": 0.0, "witnessed": 0.0}
                    for number in range(blocks):
                        for name in rotated(["plain", "witnessed"], run + number):
                            spent[name] += block(client, servers[name].base_url, calls)
                    for name, seconds in spent.items():
                        samples.add(name, blocks * calls / seconds)
                    _log(
                        f"run {run + 1}/{runs}: "
                        + ", ".join(f"{n} {blocks * calls / t:,.0f}/s" for n, t in spent.items())
                    )
                # The witnesses cosign in the background: give them (bounded) time to reach the load's end.
                deadline = time.monotonic() + 30
                while True:
                    health = client.get(servers["witnessed"].base_url + "/health").json()
                    sizes = [w["cosigned_size"] or 0 for w in health["witnesses"].values()]
                    if min(sizes) >= health["ledger_size"] or time.monotonic() > deadline:
                        break
                    time.sleep(0.1)  # bounded poll
        cosigned = [w["cosigned_size"] or 0 for w in health["witnesses"].values()]
    finally:
        workspace.cleanup()
    ratio = samples.paired_ratio("witnessed", "plain")
    rows = [
        Row(
            "HTTP /execute calls/s with two witnesses (quorum 2, default interval: a checkpoint submitted every 1 s)",
            fmt_rate(samples.median("witnessed")),
            fmt_rate(samples.median("plain")),
            f"{ratio:.2f}×",
            "≥ 0.95× (nothing measurable)",
            verdict(ratio >= 0.95),
        ),
        Row("tree size cosigned by both witnesses at the end of the load", f"{min(cosigned):,}"),
    ]
    print(render_table(rows))
    return 0 if min(cosigned) > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
