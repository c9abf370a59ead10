"""Races (SPEC §4, §7) with real server processes: one nonce, many callers; two replicas, one ledger.

- 50 callers send the same call with one nonce at once, to one process (SQLite) and spread over
  two processes sharing PostgreSQL: the side effect happens exactly once (counted on disk); every
  other caller gets ``in_progress`` while it runs, or ``replayed`` after.
- Two replicas on PostgreSQL under a mixed load of 2,000 calls (echo, add, count; fresh calls,
  replays and nonce conflicts, some answered by the other replica): ``seq`` is gap-free, the hash
  chain is linear (``openexec-mcp ledger verify``), and every client got a receipt that verifies
  with the published key and is the one the ledger holds at its ``seq``.

The PostgreSQL cases need ``OPENEXEC_TEST_POSTGRES_URL``; without it they skip, under ``CI=true``
they fail.
"""

from __future__ import annotations

import json
import random
import ssl
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import server_env
from oe_testing import verifier
from oe_testing.actions import executions
from oe_testing.nonces import fresh_nonce
from oe_testing.postgres import fresh_schema, require_postgres
from oe_testing.processes import CRASH_ACTION_MODULES, ServerProcess, error_code, http_server, run_cli, wait_for

from openexec_mcp.store import open_store

pytestmark = pytest.mark.slow

CALLERS = 50


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_schema(require_postgres()) as url:
        yield url


@pytest.fixture
def replicas(postgres_url: str, state_dir: Path, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """Two ``serve --transport http`` processes on one PostgreSQL schema, sharing the server key."""
    env = server_env(state_dir, OPENEXEC_ACTIONS__MODULES=CRASH_ACTION_MODULES, OPENEXEC_STORAGE__URL=postgres_url)
    with ExitStack() as stack:
        # One after the other: the first creates the server key and the schema, the second loads them.
        yield [stack.enter_context(http_server(env, tmp_path, name=f"replica-{i}")) for i in range(2)]


def send_together(
    servers: list[ServerProcess], action: str, payload: dict[str, Any], nonce: str
) -> list[httpx.Response]:
    """Send the same call from CALLERS threads released at once, round robin over ``servers``."""
    barrier = threading.Barrier(CALLERS, timeout=60)
    tls = ssl.create_default_context()  # unused on http://, but httpx builds one per client unless given

    def one(index: int) -> httpx.Response:
        with httpx.Client(timeout=60, verify=tls) as client:  # a connection per caller: real concurrency
            barrier.wait()
            body = {"action": action, "payload": payload, "nonce": nonce}
            return client.post(servers[index % len(servers)].base_url + "/execute", json=body)

    with ThreadPoolExecutor(max_workers=CALLERS) as pool:
        return list(pool.map(one, range(CALLERS)))


def assert_one_execution(answers: list[httpx.Response]) -> Counter[str]:
    """Exactly one caller executed; each other one got in_progress (409) or replayed (200)."""
    outcomes: Counter[str] = Counter()
    for answer in answers:
        envelope = answer.json()
        outcome = envelope["status"] if envelope["status"] != "denied" else error_code(answer)
        outcomes[str(outcome)] += 1
        assert (answer.status_code, outcome) in {(200, "executed"), (200, "replayed"), (409, "in_progress")}, envelope
        assert envelope["receipt_hash"] is not None
    assert outcomes["executed"] == 1, outcomes
    return outcomes


# -- 50 callers, one nonce ---------------------------------------------------------------------


def test_fifty_concurrent_calls_with_one_nonce_run_the_handler_once(
    state_dir: Path, tmp_path: Path, counter_file: Path
) -> None:
    env = server_env(state_dir, OPENEXEC_ACTIONS__MODULES=CRASH_ACTION_MODULES)
    with http_server(env, tmp_path) as server:
        answers = send_together([server], "count", {"label": "race"}, fresh_nonce())
    assert_one_execution(answers)
    assert executions(counter_file) == 1


def test_callers_get_in_progress_while_the_first_call_runs_and_replayed_after(
    state_dir: Path, tmp_path: Path, counter_file: Path
) -> None:
    env = server_env(state_dir, OPENEXEC_ACTIONS__MODULES=CRASH_ACTION_MODULES)
    release = tmp_path / "release"
    nonce = fresh_nonce()
    with http_server(env, tmp_path) as server, ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(server.execute, "hold", {"release": str(release)}, nonce)
        wait_for(lambda: executions(counter_file) == 1, "the first call to be running")
        during = send_together([server], "hold", {"release": str(release)}, nonce)
        assert {(a.status_code, error_code(a)) for a in during} == {(409, "in_progress")}
        release.touch()
        assert first.result(timeout=60).json()["status"] == "executed"
        after = send_together([server], "hold", {"release": str(release)}, nonce)
    assert {(a.status_code, a.json()["status"]) for a in after} == {(200, "replayed")}
    assert executions(counter_file) == 1


def test_fifty_concurrent_calls_over_two_replicas_on_postgres_run_the_handler_once(
    replicas: list[ServerProcess], counter_file: Path
) -> None:
    for round_ in range(3):  # three races, each with a new nonce
        answers = send_together(replicas, "count", {"label": f"race-{round_}"}, fresh_nonce())
        assert_one_execution(answers)
        assert executions(counter_file) == round_ + 1


# -- two replicas, 2,000 calls -------------------------------------------------------------------


@dataclass
class Call:
    action: str
    payload: dict[str, Any]
    nonce: str
    replica: int
    expect: str  # executed | replayed | nonce_conflict
    original: Call | None = None
    envelope: dict[str, Any] | None = None
    status_code: int = 0


def fresh_call(rng: random.Random, index: int) -> Call:
    kind = rng.choice(["echo", "add", "count"])
    payload: dict[str, Any] = {
        "echo": {"i": index, "text": "x" * rng.randrange(0, 64)},
        "add": {"a": rng.randrange(-1000, 1000), "b": rng.random()},
        "count": {"label": f"load-{index}"},
    }[kind]
    return Call(kind, payload, fresh_nonce(), rng.randrange(2), "executed")


def plan_load(seed: int, first: int, second: int) -> tuple[list[Call], list[Call]]:
    """``first`` fresh calls, then ``second`` calls mixing fresh ones, replays and conflicts of the first."""
    rng = random.Random(seed)
    phase1 = [fresh_call(rng, i) for i in range(first)]
    phase2: list[Call] = []
    for i in range(second):
        roll = rng.random()
        if roll < 0.5:
            phase2.append(fresh_call(rng, first + i))
            continue
        original = rng.choice(phase1)
        other = 1 - original.replica  # the other replica answers from the shared tables
        if roll < 0.8:
            phase2.append(Call(original.action, original.payload, original.nonce, other, "replayed", original))
        else:
            changed = {**original.payload, "label": "changed"} if original.action == "count" else {"a": 1, "b": 2}
            action = "count" if original.action == "count" else "add"
            phase2.append(Call(action, changed, original.nonce, other, "nonce_conflict", original))
    return phase1, phase2


async def run_load(servers: list[ServerProcess], calls: list[Call], concurrency: int) -> None:
    limit = anyio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(call: Call) -> None:
            async with limit:
                body = {"action": call.action, "payload": call.payload, "nonce": call.nonce}
                response = await client.post(servers[call.replica].base_url + "/execute", json=body)
                call.status_code, call.envelope = response.status_code, response.json()

        async with anyio.create_task_group() as tasks:
            for call in calls:
                tasks.start_soon(one, call)


def test_two_replicas_under_two_thousand_mixed_calls_keep_one_linear_gap_free_ledger(
    replicas: list[ServerProcess], postgres_url: str, state_dir: Path, counter_file: Path
) -> None:
    phase1, phase2 = plan_load(seed=5, first=1000, second=1000)
    anyio.run(run_load, replicas, phase1, 16)
    anyio.run(run_load, replicas, phase2, 16)
    calls = phase1 + phase2
    keys = httpx.get(replicas[1].base_url + "/keys", timeout=10).json()

    # Every client got its answer with a receipt that verifies with the published key.
    seqs: dict[int, str] = {}
    for call in calls:
        envelope = call.envelope
        assert envelope is not None
        body = verifier.verify_envelope(envelope, keys)
        seqs[body["seq"]] = envelope["receipt_hash"]
        if call.expect == "executed":
            assert (call.status_code, envelope["status"]) == (200, "executed"), envelope
        elif call.expect == "replayed":
            assert call.original is not None and call.original.envelope is not None
            assert (call.status_code, envelope["status"]) == (200, "replayed"), envelope
            assert envelope["result"] == call.original.envelope["result"]
            assert body["original_exec_id"] == call.original.envelope["exec_id"]
        else:
            assert (call.status_code, error_code_of(envelope)) == (409, "nonce_conflict"), envelope
    # One receipt per call: seq 0..1999 with no gap, no duplicate, nothing else in the ledger.
    assert sorted(seqs) == list(range(len(calls)))

    store = open_store(postgres_url)
    try:
        ledger = {entry.seq: entry.receipt_hash for entry in store.iter_entries()}
    finally:
        store.close()
    assert ledger == seqs  # the ledger holds exactly the receipts the clients got, at their seq

    audit = run_cli("ledger", "verify", env=server_env(state_dir, OPENEXEC_STORAGE__URL=postgres_url))
    assert audit.returncode == 0, audit
    assert audit.stdout.startswith(f"OK {len(calls)} receipts"), audit.stdout
    counted = sum(1 for call in calls if call.action == "count" and call.expect == "executed")
    assert executions(counter_file) == counted
    replicas_used = Counter(call.replica for call in calls)
    assert min(replicas_used.values()) > 800, replicas_used


def error_code_of(envelope: dict[str, Any]) -> str | None:
    error = envelope.get("error")
    return None if error is None else str(error["code"])


def test_load_plan_mixes_fresh_calls_replays_and_conflicts_across_replicas() -> None:
    phase1, phase2 = plan_load(seed=5, first=1000, second=1000)
    kinds = Counter(call.expect for call in phase2)
    assert kinds["executed"] > 400 and kinds["replayed"] > 200 and kinds["nonce_conflict"] > 100, kinds
    assert all(call.original is None or call.replica != call.original.replica for call in phase2)
    assert len({call.nonce for call in phase1}) == 1000
    assert json.dumps([call.payload for call in phase1]) == json.dumps([c.payload for c in plan_load(5, 1000, 1000)[0]])
