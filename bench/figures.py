"""The five figures of issue 6. Each returns table rows; each baseline is measured in the same runs.

Within a run every configuration's server is up at once and the load alternates between them in
short blocks (stdio) or phases (HTTP), in an order that rotates; each figure reports medians over
runs, and ratios are medians of the per-run ratios, so a burst of load from another process on
this shared machine moves both sides of a pair. A run that fails (a server killed from outside,
say) is retried once with fresh servers and state dirs.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import anyio

from bench.harness import (
    PYTHON,
    REPO_DIR,
    HttpServer,
    Row,
    Samples,
    Workspace,
    bare_command,
    fmt_mib,
    fmt_ms,
    fmt_rate,
    fmt_us,
    gated_command,
    http_server,
    rotated,
    server_env,
    verdict,
)
from bench.loads import LoadFleet, LoadResult, StdioResult, StdioServer, stdio_rates

COPY_LIMIT_BYTES = 512 * 1024 * 1024
"""Pre-filled ledgers up to this size are copied for every run; larger ones are reused in place."""

T = TypeVar("T")


@dataclass(frozen=True)
class Plan:
    """Iteration counts and time bounds; ``quick`` is the CI smoke mode."""

    runs: int
    stdio_calls: int = 1000
    stdio_warmup: int = 50
    stdio_time_limit: float = 60.0
    blocks: int = 10
    http_phases: int = 2
    http_phase_seconds: float = 2.5
    http_warmup: int = 10
    client_processes: int = 2
    scale_sizes: tuple[int, ...] = (10**3, 10**5, 10**6)
    scale_calls: int = 1000
    profile_calls: int = 3000
    profile_blocks: int = 10
    prefill_cache: Path | None = None

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            runs=1,
            stdio_calls=60,
            stdio_warmup=5,
            stdio_time_limit=10.0,
            blocks=3,
            http_phases=1,
            http_phase_seconds=1.0,
            http_warmup=2,
            scale_sizes=(10**2, 10**3),
            scale_calls=60,
            profile_calls=150,
            profile_blocks=3,
        )


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        group: BaseExceptionGroup[BaseException] = exc  # pyright: ignore[reportUnknownVariableType]
        return [leaf for inner in group.exceptions for leaf in _leaves(inner)]
    return [exc]


def _retry_once(label: str, attempt: Callable[[], T]) -> T:
    try:
        return attempt()
    except Exception as exc:
        causes = "; ".join(f"{type(leaf).__name__}: {str(leaf)[:300]}" for leaf in _leaves(exc))
        _log(f"  {label} failed ({causes}); retrying once with fresh servers")
        return attempt()


def _ratio_row(
    figure: str,
    samples: Samples,
    config: str,
    baseline: str,
    goal: float | None,
    fmt: Callable[[float], str] = fmt_rate,
    below: bool = False,
) -> Row:
    """A row whose ratio is ``config / baseline``; the goal is ``ratio ≥ goal`` (``≤`` when ``below``)."""
    ratio = samples.paired_ratio(config, baseline)
    if goal is None:
        goal_text, met = "reported", ""
    else:
        goal_text = f"≤ {goal:.2f}" if below else f"≥ {goal:.2f}"
        met = verdict(ratio <= goal if below else ratio >= goal)
    return Row(figure, fmt(samples.median(config)), fmt(samples.median(baseline)), f"{ratio:.2f}", goal_text, met)


def _stdio_servers(
    ws: Workspace, label: str, configs: dict[str, tuple[list[str], Path | None, str]]
) -> dict[str, StdioServer]:
    servers: dict[str, StdioServer] = {}
    for name, (command, state, synchronous) in configs.items():
        work = ws.fresh_dir(f"{label}-{name}")
        env = server_env(state, synchronous=synchronous)
        tool = "echo"
        if name == SIDE_EFFECT:
            env["OPENEXEC_ACTIONS__MODULES"] = '["bench.side_effect_action"]'
            tool = "echo_write"
        servers[name] = StdioServer(command, env, work / "server.log", work / "server.pid", tool)
    return servers


SIDE_EFFECT = "side-effect"
"""The stdio configuration calling ``echo_write`` (declared side-effecting: claim before the handler)."""


# -- 1. stdio, sequential ------------------------------------------------------------------------


def figure_stdio(plan: Plan, ws: Workspace) -> list[Row]:
    rates, cpu = Samples(), Samples()

    def attempt() -> dict[str, StdioResult]:
        state_root = ws.fresh_dir("stdio-state")
        servers = _stdio_servers(
            ws,
            "stdio",
            {
                "bare": (bare_command("stdio"), None, "full"),
                "full": (gated_command(), state_root / "full", "full"),
                "normal": (gated_command(), state_root / "normal", "normal"),
                SIDE_EFFECT: (gated_command(), state_root / "side-effect", "full"),
            },
        )
        return anyio.run(
            functools.partial(
                stdio_rates,
                servers,
                calls=plan.stdio_calls,
                blocks=plan.blocks,
                warmup=plan.stdio_warmup,
                time_limit=plan.stdio_time_limit,
            )
        )

    for run in range(plan.runs):
        results = _retry_once(f"stdio run {run + 1}", attempt)
        for name, result in results.items():
            rates.add(name, result.rate)
            cpu.add(name, result.cpu_per_call)
        _log(
            f"  stdio run {run + 1}: "
            + ", ".join(
                f"{n} {r.rate:,.0f} calls/s ({fmt_us(r.cpu_per_call)} server CPU/call)" for n, r in results.items()
            )
        )
    return [
        _ratio_row("1. stdio, sequential calls/s, SQLite synchronous=full", rates, "full", "bare", 0.75),
        _ratio_row("1. stdio, sequential calls/s, SQLite synchronous=normal", rates, "normal", "bare", None),
        _ratio_row("1. stdio, sequential calls/s, side-effecting echo_write, full", rates, SIDE_EFFECT, "bare", 0.6),
        _ratio_row("1. stdio, server CPU per call, full", cpu, "full", "bare", None, fmt_us),
        _ratio_row("1. stdio, server CPU per call, normal", cpu, "normal", "bare", None, fmt_us),
    ]


# -- 2 and 3: HTTP ---------------------------------------------------------------------------------


def _http_servers(stack: contextlib.ExitStack, ws: Workspace, label: str, bare_mode: str) -> dict[str, HttpServer]:
    """Start the bare baseline (``bare_mode``) and the gated server (SQLite full), both on 127.0.0.1."""
    bare_work, gated_work = ws.fresh_dir(f"{label}-bare"), ws.fresh_dir(f"{label}-gated")
    gated = gated_command("--transport", "http", "--host", "127.0.0.1", "--port", "{port}")
    return {
        "bare": stack.enter_context(
            http_server(bare_command(bare_mode, "{port}"), server_env(None), bare_work / "server.log")
        ),
        "gated": stack.enter_context(http_server(gated, server_env(gated_work / "state"), gated_work / "server.log")),
    }


def _interleave(fleet: LoadFleet, servers: dict[str, HttpServer], plan: Plan) -> dict[str, LoadResult]:
    results = {name: LoadResult() for name in servers}
    for phase in range(plan.http_phases):
        for name in rotated(list(results), phase):
            fleet.phase(name, plan.http_phase_seconds, results[name], servers[name].process.pid)
    for name, result in results.items():
        if result.errors:
            raise RuntimeError(f"{name}: {result.errors} of {result.count} calls failed")
    return results


def _latency_rows(prefix: str, p50s: Samples, p99s: Samples, p99_goal: bool) -> list[Row]:
    p99 = p99s.median("gated")
    return [
        _ratio_row(f"{prefix}, p50", p50s, "gated", "bare", None, fmt_ms),
        Row(
            f"{prefix}, p99",
            fmt_ms(p99),
            fmt_ms(p99s.median("bare")),
            f"{p99s.paired_ratio('gated', 'bare'):.2f}",
            "< 25 ms" if p99_goal else "reported",
            verdict(p99 < 0.025) if p99_goal else "",
        ),
    ]


def _load_figure(plan: Plan, ws: Workspace, label: str, mode: str, levels: tuple[int, ...]) -> dict[int, list[Samples]]:
    """Per concurrency level: calls/s, p50, p99 and server CPU per call samples, bare and gated."""
    samples = {level: [Samples(), Samples(), Samples(), Samples()] for level in levels}
    path = "/mcp" if mode == "mcp" else "/execute"

    def attempt(run: int) -> dict[int, dict[str, LoadResult]]:
        measured: dict[int, dict[str, LoadResult]] = {}
        with contextlib.ExitStack() as stack:
            servers = _http_servers(stack, ws, label, "http" if mode == "mcp" else "execute")
            targets = {name: server.base_url + path for name, server in servers.items()}
            for level in levels:
                processes = 1 if level == 1 else plan.client_processes
                with LoadFleet(
                    mode,
                    targets,
                    concurrency=level,
                    processes=processes,
                    warmup=plan.http_warmup,
                    log=servers["gated"].log.with_name("load.log"),
                    prefix=f"r{run}c{level}",
                ) as fleet:
                    measured[level] = _interleave(fleet, servers, plan)
        return measured

    for run in range(plan.runs):
        measured = _retry_once(f"{label} run {run + 1}", functools.partial(attempt, run))
        for level, results in measured.items():
            rates, p50s, p99s, cpu = samples[level]
            for name, result in results.items():
                rates.add(name, result.rate)
                p50s.add(name, result.p50)
                p99s.add(name, result.p99)
                cpu.add(name, result.cpu_per_call)
            _log(
                f"  {label} run {run + 1} c={level}: "
                + ", ".join(
                    f"{n} {r.rate:,.0f}/s p50 {fmt_ms(r.p50)} p99 {fmt_ms(r.p99)} CPU/call {fmt_us(r.cpu_per_call)}"
                    for n, r in results.items()
                )
            )
    return samples


def figure_http(plan: Plan, ws: Workspace) -> list[Row]:
    rates, p50s, p99s, cpu = _load_figure(plan, ws, "http", "mcp", (16,))[16]
    prefix = "2. streamable HTTP, 16 clients"
    return [
        _ratio_row(f"{prefix}, calls/s", rates, "gated", "bare", 0.70),
        *_latency_rows(prefix, p50s, p99s, p99_goal=True),
        _ratio_row(f"{prefix}, server CPU per call", cpu, "gated", "bare", None, fmt_us),
    ]


def figure_execute(plan: Plan, ws: Workspace) -> list[Row]:
    rows: list[Row] = []
    for level, (rates, p50s, p99s, cpu) in _load_figure(plan, ws, "execute", "execute", (1, 16)).items():
        prefix = f"3. POST /execute c={level}"
        rows.append(_ratio_row(f"{prefix}, req/s", rates, "gated", "bare", 0.50))
        rows.extend(_latency_rows(prefix, p50s, p99s, p99_goal=level == 16))
        rows.append(_ratio_row(f"{prefix}, server CPU per request", cpu, "gated", "bare", None, fmt_us))
    return rows


# -- 4. scale: ledger size -----------------------------------------------------------------------


def _prefilled(plan: Plan, ws: Workspace, size: int) -> Path:
    from bench.prefill import complete_derived_state, prefill

    if plan.prefill_cache is not None:
        state = plan.prefill_cache / f"ledger-{size}"
        if (state / "complete").exists():
            _log(f"  scale: reusing the pre-filled ledger of {size:,} in {state}")
            complete_derived_state(state)  # cheap when complete; catches up after a store upgrade
            return state
        shutil.rmtree(state, ignore_errors=True)
    else:
        state = ws.fresh_dir(f"prefill-{size}") / "state"
    _log(f"  scale: pre-filling a ledger of {size:,} receipts ...")
    seconds = prefill(state, size, progress=size >= 10**5)
    (state / "complete").write_text(f"{size}\n")
    _log(f"  scale: pre-filled {size:,} in {seconds:.0f} s")
    return state


def _verify_ledger(state: Path) -> None:
    """``openexec-mcp ledger verify`` must accept a pre-filled ledger (checked on a copy of the smallest)."""
    completed = subprocess.run(
        [PYTHON, "-m", "openexec_mcp", "ledger", "verify"],
        env=server_env(state),
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the pre-filled ledger does not verify: {completed.stdout} {completed.stderr}")


def figure_scale(plan: Plan, ws: Workspace) -> list[Row]:
    sizes = plan.scale_sizes
    sources = {size: _prefilled(plan, ws, size) for size in sizes}
    checked = ws.fresh_dir("scale-verify") / "state"
    shutil.copytree(sources[sizes[0]], checked)
    _verify_ledger(checked)
    in_place: dict[int, Path] = {}
    for size, source in sources.items():
        if (source / "openexec.db").stat().st_size > COPY_LIMIT_BYTES:
            # Too big to copy per run: one private copy (if it is the cache's), then runs append to it.
            if plan.prefill_cache is not None:
                copy = ws.fresh_dir(f"scale-{size}") / "state"
                shutil.copytree(source, copy)
                source = copy
            in_place[size] = source
    rates, rss = Samples(), Samples()

    def attempt() -> dict[str, StdioResult]:
        configs: dict[str, tuple[list[str], Path | None, str]] = {}
        for size in sizes:
            state = in_place.get(size)
            if state is None:
                state = ws.fresh_dir(f"scale-{size}-state") / "state"
                shutil.copytree(sources[size], state)
            configs[str(size)] = (gated_command(), state, "full")
        return anyio.run(
            functools.partial(
                stdio_rates,
                _stdio_servers(ws, "scale", configs),
                calls=plan.scale_calls,
                blocks=plan.blocks,
                warmup=plan.stdio_warmup,
                time_limit=plan.stdio_time_limit,
            )
        )

    for run in range(plan.runs):
        results = _retry_once(f"scale run {run + 1}", attempt)
        for size, result in results.items():
            rates.add(size, result.rate)
            rss.add(size, float(result.peak_rss))
        _log(
            f"  scale run {run + 1}: "
            + ", ".join(
                f"ledger {int(n):,} {r.rate:,.0f} calls/s peak RSS {fmt_mib(r.peak_rss)}" for n, r in results.items()
            )
        )
    base = str(sizes[0])
    rows = [
        Row(
            f"4. scale, ledger {sizes[0]:,}: calls/s (stdio, full) and peak RSS",
            f"{fmt_rate(rates.median(base))}, {fmt_mib(rss.median(base))}",
            "",
            "",
            "baseline",
            "",
        )
    ]
    for size in sizes[1:]:
        rows.append(_ratio_row(f"4. scale, ledger {size:,}: calls/s", rates, str(size), base, 0.90))
        rows.append(_ratio_row(f"4. scale, ledger {size:,}: peak RSS", rss, str(size), base, 1.10, fmt_mib, below=True))
    return rows


# -- 5. where the time goes ----------------------------------------------------------------------


def figure_profile(plan: Plan, ws: Workspace) -> list[Row]:
    from bench.gate_profile import PHASES, profile

    result = anyio.run(
        functools.partial(
            profile,
            ws.fresh_dir("profile") / "state",
            count=plan.profile_calls * plan.runs,
            synchronous="full",
            blocks=plan.profile_blocks * plan.runs,
            time_limit=120.0 * plan.runs,
        )
    )
    total = sum(result.phases.values())
    rows = [
        Row(
            "5. in-process call via in-memory SDK Client, per call (full)",
            fmt_us(result.gated_seconds),
            fmt_us(result.bare_seconds),
            f"{result.gated_seconds / result.bare_seconds:.2f}",
            "profile",
            "",
        )
    ]
    for name, label in PHASES:
        seconds = result.phases[name]
        rows.append(Row(f"5. phase: {label}", f"{fmt_us(seconds)} ({seconds / total:.0%})"))
    return rows


def figure_ledger(plan: Plan, workspace: Workspace) -> list[Row]:
    """Issue 4: audit rate against raw Ed25519, and proof/checkpoint cost at several ledger sizes."""
    from bench import ledger

    quick = plan == Plan.quick()
    return [Row(**row) for row in ledger.figures(quick=quick, root=workspace.fresh_dir("ledger"))]


# -- 6. PostgreSQL: two replicas on one database ---------------------------------------------------


@contextlib.contextmanager
def _postgres_schema(base_url: str) -> Generator[str, None, None]:
    """A new, empty schema on ``base_url`` (``search_path`` in the returned URL), dropped afterwards."""
    import psycopg
    from psycopg import sql

    schema = f"oe_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    separator = "&" if "?" in base_url else "?"
    try:
        yield f"{base_url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def figure_replicas(plan: Plan, ws: Workspace) -> list[Row]:
    """``POST /execute`` c=16 (side-effecting ``echo_write``) on two replicas sharing one database vs one replica.

    Needs ``OPENEXEC_BENCH_POSTGRES_URL`` (or ``OPENEXEC_TEST_POSTGRES_URL``); the load is split
    round robin over the replicas. On 2 cores shared with the load generator and PostgreSQL, the
    ratio shows the ledger lock and group commit do not serialise replicas, not linear scaling.
    """
    base_url = os.environ.get("OPENEXEC_BENCH_POSTGRES_URL") or os.environ.get("OPENEXEC_TEST_POSTGRES_URL", "")
    label = "6. PostgreSQL, POST /execute c=16 side-effecting: 2 replicas vs 1, req/s"
    if not base_url:
        return [Row(label, "skipped: set OPENEXEC_BENCH_POSTGRES_URL", "", "", "reported", "")]
    rates = Samples()

    def attempt(run: int) -> dict[str, LoadResult]:
        with contextlib.ExitStack() as stack:
            url = stack.enter_context(_postgres_schema(base_url))
            state = ws.fresh_dir(f"replicas-{run}") / "state"
            env = server_env(state)
            env["OPENEXEC_STORAGE__URL"] = url
            env["OPENEXEC_ACTIONS__MODULES"] = '["bench.side_effect_action"]'
            command = gated_command("--transport", "http", "--host", "127.0.0.1", "--port", "{port}")
            servers = [
                stack.enter_context(http_server(command, env, state.parent / f"replica-{i}.log")) for i in range(2)
            ]
            one = servers[0].base_url + "/execute#echo_write"
            two = "|".join(server.base_url + "/execute" for server in servers) + "#echo_write"
            with LoadFleet(
                "execute",
                {"one": one, "two": two},
                concurrency=16,
                processes=plan.client_processes,
                warmup=plan.http_warmup,
                log=state.parent / "load.log",
                prefix=f"rep{run}",
            ) as fleet:
                results = {name: LoadResult() for name in ("one", "two")}
                for phase in range(plan.http_phases):
                    for name in rotated(list(results), phase):
                        fleet.phase(name, plan.http_phase_seconds, results[name])
        for name, result in results.items():
            if result.errors:
                raise RuntimeError(f"{name}: {result.errors} of {result.count} calls failed")
        return results

    for run in range(plan.runs):
        results = _retry_once(f"replicas run {run + 1}", functools.partial(attempt, run))
        for name, result in results.items():
            rates.add(name, result.rate)
        _log(f"  replicas run {run + 1}: " + ", ".join(f"{n} {r.rate:,.0f}/s" for n, r in results.items()))
    return [_ratio_row(label, rates, "two", "one", None)]


FIGURES: dict[str, Callable[[Plan, Workspace], list[Row]]] = {
    "stdio": figure_stdio,
    "http": figure_http,
    "execute": figure_execute,
    "scale": figure_scale,
    "profile": figure_profile,
    "ledger": figure_ledger,
    "replicas": figure_replicas,
}
