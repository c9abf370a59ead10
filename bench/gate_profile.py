"""Figure 5: where the time of one gated call goes, by phase, from an instrumented in-process loop.

A sampling profiler cannot attribute this well: half of a gated call runs on anyio worker
threads (the store, the sync handler) and much of it is off-CPU (``fsync`` under
``synchronous=FULL``). So the loop runs the real ``build_runtime`` gate behind the real
``build_mcp_server`` with an in-memory SDK ``mcp.Client``, and wraps, in this process only,
the functions that mark each phase with a wall-clock probe. The probe keeps one stack per
thread and charges each span its *exclusive* time (the innermost phase wins), so the phases
add up to the measured per-call time. Nothing in ``openexec_mcp`` is edited; the wrappers are
assigned at run time. The probes cost about 1 us each (some 20 per call).

The same loop without probes, and on the bare ``MCPServer`` of ``bench/bare_server.py``, gives
the totals. ``python -m bench.gate_profile [N] [full|normal]`` (from the repository root) prints the breakdown alone.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import statistics
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Generator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import rfc8785
from mcp import Client
from mcp.client.session import ClientSession

import openexec_mcp.core.canonical
import openexec_mcp.gate.receipts
import openexec_mcp.gate.recording
from bench import bare_server
from openexec_mcp.config import load_settings
from openexec_mcp.core.receipt import ServerKey
from openexec_mcp.runtime import Runtime, build_runtime
from openexec_mcp.transport.mcp import GateExtension, build_mcp_server

PHASES = (
    ("protocol", "MCP SDK dispatch, client + server (in-memory, no JSON framing)"),
    ("client_validation", "SDK client: outputSchema validation of the envelope (jsonschema)"),
    ("wiring", "openexec MCP wiring: envelope to CallToolResult (server.py)"),
    ("validation", "gate step 1: limits, nonce, strict pydantic input (excl. canonicalization)"),
    ("canonicalization", "RFC 8785 canonicalization + depth check (every call site)"),
    ("nonce_claim", "gate step 4: nonce claim SQL (excl. commit)"),
    ("handler", "gate step 5: handler + result dump/limits (excl. canonicalization)"),
    ("receipt", "receipt body + DSSE envelope + hashes (excl. canonicalization, signing)"),
    ("signing", "Ed25519 signature"),
    ("ledger", "gate step 6: outcome UPDATE, ledger INSERT, tree-node SQL (excl. commit)"),
    ("commit", "COMMIT (one for read_only echo: claim+outcome+receipt): fsync under FULL"),
    ("writer", "store writer hand-off: queue, wake-up, future completion (excl. its SQL and commit)"),
    ("threads", "worker-thread hand-offs (anyio.to_thread): the sync handler"),
    ("gate_other", "gate, other: action hash, timestamps, exec_id, envelope"),
)


class Probe:
    """Wall-clock spans with one stack per thread; each span is charged its exclusive time."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self._local = threading.local()
        self._lock = threading.Lock()
        self.last_commit = 0.0
        """Seconds of the writer's last COMMIT (the sequential loop's batch is one call)."""

    @contextmanager
    def span(self, phase: str) -> Generator[list[float], None, None]:
        stack: list[list[float]] = self._local.__dict__.setdefault("stack", [])
        frame = [0.0]  # time of children, including other threads' work this span waited for
        stack.append(frame)
        start = time.perf_counter()
        try:
            yield frame
        finally:
            elapsed = time.perf_counter() - start
            stack.pop()
            with self._lock:
                self.totals[phase] += elapsed - frame[0]
            if stack:
                stack[-1][0] += elapsed

    def wrap(self, fn: Callable[..., Any], phase: str) -> Callable[..., Any]:
        @wraps(fn)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            with self.span(phase):
                return fn(*args, **kwargs)

        return sync_wrapper

    def wrap_async(self, fn: Callable[..., Any], phase: str) -> Callable[..., Any]:
        @wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            with self.span(phase):
                return await fn(*args, **kwargs)

        return async_wrapper


class _TimedKey:
    def __init__(self, key: Any, probe: Probe) -> None:
        self._key, self._probe = key, probe

    def sign(self, data: bytes) -> bytes:
        with self._probe.span("signing"):
            return self._key.sign(data)


class _TimedConnection:
    """Charges ``COMMIT`` to its own phase; every other statement stays in its caller's phase."""

    def __init__(self, db: sqlite3.Connection, probe: Probe) -> None:
        self._db, self._probe = db, probe

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT":
            start = time.perf_counter()
            try:
                with self._probe.span("commit"):
                    return self._db.execute(sql, *args)
            finally:
                self._probe.last_commit = time.perf_counter() - start
        return self._db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


@contextmanager
def instrumented(runtime: Runtime, probe: Probe) -> Generator[None, None, None]:
    """Install the probes on ``runtime`` and on the modules the gate calls; undo them on exit."""
    gate, store = runtime.gate, runtime.store
    saved_modules = [
        (rfc8785, "dumps"),
        (openexec_mcp.core.canonical, "_check_depth"),
        (openexec_mcp.gate.receipts, "sign_receipt"),
        (anyio.to_thread, "run_sync"),
        (ClientSession, "validate_tool_result"),
        (GateExtension, "intercept_tool_call"),
    ]
    saved = [
        (owner, name, owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name))
        for owner, name in saved_modules
    ]
    original_run_sync = anyio.to_thread.run_sync

    async def run_sync(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        worker_seconds = [0.0]

        def timed(*inner: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*inner)
            finally:
                worker_seconds[0] = time.perf_counter() - start

        with probe.span("threads") as frame:
            try:
                return await original_run_sync(timed, *args, **kwargs)
            finally:
                frame[0] += worker_seconds[0]  # the worker's phases were charged on its own stack

    rfc8785.dumps = probe.wrap(rfc8785.dumps, "canonicalization")
    openexec_mcp.core.canonical._check_depth = probe.wrap(openexec_mcp.core.canonical._check_depth, "canonicalization")  # pyright: ignore[reportPrivateUsage]
    openexec_mcp.gate.receipts.sign_receipt = probe.wrap(openexec_mcp.gate.receipts.sign_receipt, "receipt")
    anyio.to_thread.run_sync = run_sync
    ClientSession.validate_tool_result = probe.wrap_async(ClientSession.validate_tool_result, "client_validation")
    GateExtension.intercept_tool_call = probe.wrap_async(GateExtension.intercept_tool_call, "wiring")
    key = gate.server_key
    gate.call = probe.wrap_async(gate.call, "gate_other")  # type: ignore[method-assign]
    gate._validate = probe.wrap_async(gate._validate, "validation")  # type: ignore[method-assign]  # pyright: ignore[reportPrivateUsage]
    runner = gate.runner
    runner.run = probe.wrap_async(runner.run, "handler")  # type: ignore[method-assign]
    timed_key = ServerKey(private_key=_TimedKey(key.private_key, probe), public_raw=key.public_raw, kid=key.kid)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    gate.receipts._server_key = timed_key  # pyright: ignore[reportPrivateUsage]
    original_submit = store.submit
    original_wait = openexec_mcp.gate.recording.writer_wait
    boxes: dict[int, list[float]] = {}

    def submit(fn: Callable[[], Any]) -> Any:
        box = [0.0]

        def timed() -> Any:
            start = time.perf_counter()
            try:
                return fn()
            finally:
                box[0] = time.perf_counter() - start

        future = original_submit(timed)
        boxes[id(future)] = box
        return future

    async def writer_wait(future: Any) -> Any:
        probe.last_commit = 0.0
        with probe.span("writer") as frame:
            try:
                return await original_wait(future)
            finally:
                # The op's SQL and its batch's commit were charged on the writer thread's own stack.
                frame[0] += boxes.pop(id(future), [0.0])[0] + probe.last_commit

    store.submit = submit  # type: ignore[method-assign]
    openexec_mcp.gate.recording.writer_wait = writer_wait  # type: ignore[assignment]
    db = store._db  # type: ignore[attr-defined]  # pyright: ignore[reportUnknownMemberType, reportAttributeAccessIssue]
    store.claim_nonce = probe.wrap(store.claim_nonce, "nonce_claim")  # type: ignore[method-assign]
    store.claim_and_finish = probe.wrap(store.claim_and_finish, "ledger")  # type: ignore[method-assign]
    store.finish = probe.wrap(store.finish, "ledger")  # type: ignore[method-assign]
    store._db = _TimedConnection(store._db, probe)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)
        gate.receipts._server_key = key  # pyright: ignore[reportPrivateUsage]
        store._db = db  # type: ignore[attr-defined]
        openexec_mcp.gate.recording.writer_wait = original_wait  # type: ignore[assignment]
        for owner_instance, names in (
            (gate, ("call", "_validate")),
            (runner, ("run",)),
            (store, ("claim_nonce", "finish", "claim_and_finish", "submit")),
        ):
            for name in names:
                delattr(owner_instance, name)  # the instance attribute hid the class's method


async def _loop(client: Client, count: int, prefix: str, probe: Probe | None, deadline: float) -> tuple[int, float]:
    start = time.perf_counter()
    done = 0
    for n in range(count):
        if time.perf_counter() > deadline:
            break
        if probe is None:
            result = await client.call_tool("echo", {"msg": "hello world", "nonce": f"{prefix}-{n:08d}"})
        else:
            with probe.span("protocol"):
                result = await client.call_tool("echo", {"msg": "hello world", "nonce": f"{prefix}-{n:08d}"})
        if result.is_error:
            raise RuntimeError(f"call failed: {result.structured_content}")
        done += 1
    return done, time.perf_counter() - start


@dataclasses.dataclass
class Breakdown:
    """Per-call seconds: gated and bare totals (no probes), and the probed phases."""

    gated_seconds: float
    bare_seconds: float
    probed_seconds: float
    phases: dict[str, float]


async def profile(
    state_dir: Path, *, count: int, synchronous: str = "full", blocks: int = 10, time_limit: float = 60.0
) -> Breakdown:
    """Measure about ``count`` calls of each loop, interleaved in ``blocks`` (bounded by ``time_limit`` s).

    The gated, bare and probed loops alternate block by block (in rotating order), and the totals
    are medians over blocks, so a burst of load from another process on this shared machine hits
    all three alike.
    """
    deadline = time.perf_counter() + time_limit
    settings = load_settings(None, state_dir=state_dir, mode="demo", storage={"sqlite_synchronous": synchronous})
    runtime = build_runtime(settings)
    per_call: dict[str, list[float]] = {"gated": [], "bare": [], "probed": []}
    probe = Probe()
    n_probed = 0
    size = max(5, count // blocks)
    try:
        gated_server = build_mcp_server(runtime.gate, tenant_for=lambda _ctx: settings.tenant_id)
        async with Client(gated_server) as gated, Client(bare_server.build_mcp_server()) as bare:
            await _loop(gated, size, "warm", None, deadline)
            await _loop(bare, size, "warm", None, deadline)
            for block in range(blocks):
                order = ["gated", "bare", "probed"]
                for kind in order[block % 3 :] + order[: block % 3]:
                    prefix = f"{kind}{block}"
                    if kind == "probed":
                        with instrumented(runtime, probe):
                            done, seconds = await _loop(gated, size, prefix, probe, deadline)
                        n_probed += done
                    else:
                        done, seconds = await _loop(gated if kind == "gated" else bare, size, prefix, None, deadline)
                    if done:
                        per_call[kind].append(seconds / done)
    finally:
        runtime.close()
    if not all(per_call.values()):
        raise RuntimeError("the profile loop ran out of time before measuring anything")
    phases = {name: probe.totals.get(name, 0.0) / max(n_probed, 1) for name, _ in PHASES}
    return Breakdown(
        statistics.median(per_call["gated"]),
        statistics.median(per_call["bare"]),
        statistics.median(per_call["probed"]),
        phases,
    )


def main(argv: list[str]) -> int:
    import tempfile

    count = int(argv[0]) if argv else 2000
    synchronous = argv[1] if len(argv) > 1 else "full"
    with tempfile.TemporaryDirectory(prefix="openexec-bench-") as root:
        result = anyio.run(lambda: profile(Path(root) / "state", count=count, synchronous=synchronous))
    print(
        f"gated {result.gated_seconds * 1e6:.0f} us/call, bare {result.bare_seconds * 1e6:.0f} us/call, "
        f"probed {result.probed_seconds * 1e6:.0f} us/call ({synchronous})"
    )
    for name, label in PHASES:
        share = result.phases[name] / sum(result.phases.values())
        print(f"  {result.phases[name] * 1e6:7.0f} us {share:6.1%}  {label}")
    print(f"  {sum(result.phases.values()) * 1e6:7.0f} us  sum of phases")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
