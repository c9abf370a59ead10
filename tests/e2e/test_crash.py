"""Crash semantics (SPEC §4) with real processes: kill -9 at every write point, restart, count.

Fault injection (``OPENEXEC_UNSAFE_FAULTS``) makes the server SIGKILL itself at a named point:
after the durable nonce claim, inside the handler, after the handler but before its outcome
commits, after the commit but before the answer, and between signing a checkpoint and storing it.
A second server then starts on the same state without the fault, and the tests check what the
guarantees promise:

- no second execution: the side effects are counted on disk (``$OPENEXEC_TEST_COUNTER``);
- the retry answers ``outcome_unknown`` for a death mid-run, and ``replayed`` after the commit;
- the cut-off call has exactly one receipt (``indeterminate``), so no receipt is lost and none is
  doubled, and ``openexec-mcp ledger verify`` passes;
- the operator's ``ledger resolve`` decides: ``--mark-failed`` makes retries replay a failure,
  ``--rerun`` runs an idempotent action exactly once more and is refused for any other.

Then SIGTERM: a call in flight finishes with its receipt, ``/ready`` answers 503 and new calls
``shutting_down`` while it does, and the process exits, over HTTP and over stdio.
"""

from __future__ import annotations

import base64
import contextlib
import json
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import server_env
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from oe_testing import verifier
from oe_testing.actions import executions
from oe_testing.nonces import fresh_nonce
from oe_testing.processes import (
    CRASH_ACTION_MODULES,
    ServerProcess,
    error_code,
    http_server,
    ready_status,
    run_cli,
    stop,
    wait_for,
)

from openexec_mcp.core.tlog.checkpoint import verify_checkpoint
from openexec_mcp.store import open_store

pytestmark = pytest.mark.slow


@pytest.fixture
def env(state_dir: Path) -> dict[str, str]:
    return server_env(state_dir, OPENEXEC_ACTIONS__MODULES=CRASH_ACTION_MODULES)


def receipts(state_dir: Path, nonce: str | None = None) -> list[dict[str, Any]]:
    """Every receipt body in the ledger (of one nonce), in seq order, read straight from the store."""
    store = open_store("sqlite:///" + str(state_dir / "openexec.db"))
    try:
        bodies = [verifier.decode_payload(json.loads(entry.envelope)) for entry in store.iter_entries()]
    finally:
        store.close()
    return [body for body in bodies if nonce is None or body["nonce"] == nonce]


def assert_ledger_verifies(env: dict[str, str]) -> None:
    audit = run_cli("ledger", "verify", env=env)
    assert audit.returncode == 0, audit
    assert audit.stdout.startswith("OK "), audit.stdout


def crash_once(env: dict[str, str], root: Path, fault: str, action: str, nonce: str) -> None:
    """Start a server armed at ``fault``, send one call, and watch the process kill itself."""
    with http_server({**env, "OPENEXEC_UNSAFE_FAULTS": fault}, root, name=f"crash-{fault}") as server:
        with pytest.raises(httpx.TransportError):
            server.execute(action, {"label": fault}, nonce)
        assert server.process.wait(timeout=30) == -signal.SIGKILL


# -- kill -9 at each write point --------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "action", "runs"),
    [
        ("after_claim", "count", 0),  # claimed durably; the handler never started
        ("in_handler", "count_then_crash", 1),  # the side effect happened; no outcome
        ("before_finish", "count", 1),  # the handler returned; its outcome never committed
    ],
)
def test_a_call_killed_mid_run_is_indeterminate_and_never_runs_again(
    env: dict[str, str], state_dir: Path, tmp_path: Path, counter_file: Path, fault: str, action: str, runs: int
) -> None:
    nonce = fresh_nonce()
    crash_once(env, tmp_path, fault, action, nonce)
    assert executions(counter_file) == runs
    assert receipts(state_dir) == []  # nothing committed a receipt before the kill

    with http_server(env, tmp_path, name="restarted") as server:
        # Start-up recovery recorded the cut-off call, exactly once.
        (cut_off,) = receipts(state_dir, nonce)
        assert (cut_off["status"], cut_off["error_code"], cut_off["action"]) == (
            "indeterminate",
            "outcome_unknown",
            action,
        )
        for _ in range(2):
            retry = server.execute(action, {"label": fault}, nonce)
            assert retry.status_code == 409
            assert error_code(retry) == "outcome_unknown"
            assert retry.json()["status"] == "denied"
        assert executions(counter_file) == runs
        # Other nonces are unaffected.
        other = server.execute("count", {"label": "after"}, fresh_nonce())
        assert other.status_code == 200 and other.json()["result"] == {"executions": runs + 1}

    statuses = [body["status"] for body in receipts(state_dir, nonce)]
    assert statuses == ["indeterminate", "denied", "denied"]
    assert [body["seq"] for body in receipts(state_dir)] == list(range(4))
    assert_ledger_verifies(env)


def test_a_call_killed_after_its_commit_is_replayed_not_rerun(
    env: dict[str, str], state_dir: Path, tmp_path: Path, counter_file: Path
) -> None:
    nonce = fresh_nonce()
    crash_once(env, tmp_path, "after_finish", "count", nonce)
    assert executions(counter_file) == 1
    (committed,) = receipts(state_dir, nonce)
    assert committed["status"] == "executed"

    with http_server(env, tmp_path, name="restarted") as server:
        retry = server.execute("count", {"label": "after_finish"}, nonce)
        assert retry.status_code == 200
        envelope = retry.json()
        assert envelope["status"] == "replayed"
        assert envelope["result"] == {"executions": 1}
        keys = server_keys(server)
        body = verifier.verify_envelope(envelope, keys)
        assert body["original_exec_id"] == committed["exec_id"]
        assert body["result_hash"] == committed["result_hash"]
    assert executions(counter_file) == 1
    assert [body["status"] for body in receipts(state_dir, nonce)] == ["executed", "replayed"]
    assert_ledger_verifies(env)


# -- read_only actions: one durable commit, after the handler (README) ---------------------------


def test_a_read_only_call_killed_before_its_one_commit_leaves_nothing_and_runs_again(
    env: dict[str, str], state_dir: Path, tmp_path: Path, counter_file: Path
) -> None:
    nonce = fresh_nonce()
    crash_once(env, tmp_path, "before_finish", "count_read", nonce)
    assert executions(counter_file) == 1  # the read ran
    assert receipts(state_dir) == []  # and nothing of it was committed: no claim, no receipt

    with http_server(env, tmp_path, name="restarted") as server:
        assert receipts(state_dir) == []  # nothing to recover: the nonce was never claimed
        retry = server.execute("count_read", {"label": "again"}, nonce)
        assert retry.status_code == 200
        assert retry.json()["status"] == "executed"
        replay = server.execute("count_read", {"label": "again"}, nonce)
        assert replay.json()["status"] == "replayed"
        assert replay.json()["result"] == retry.json()["result"]
    assert [body["status"] for body in receipts(state_dir, nonce)] == ["executed", "replayed"]
    assert [body["seq"] for body in receipts(state_dir)] == [0, 1]
    assert_ledger_verifies(env)


def test_a_read_only_call_killed_after_its_one_commit_is_replayed_not_rerun(
    env: dict[str, str], state_dir: Path, tmp_path: Path, counter_file: Path
) -> None:
    nonce = fresh_nonce()
    crash_once(env, tmp_path, "after_finish", "count_read", nonce)
    assert executions(counter_file) == 1
    (committed,) = receipts(state_dir, nonce)
    assert committed["status"] == "executed"

    with http_server(env, tmp_path, name="restarted") as server:
        retry = server.execute("count_read", {"label": "after_finish"}, nonce)
        assert retry.status_code == 200
        assert retry.json()["status"] == "replayed"
        assert retry.json()["result"] == {"executions": 1}
    assert executions(counter_file) == 1
    assert [body["status"] for body in receipts(state_dir, nonce)] == ["executed", "replayed"]
    assert_ledger_verifies(env)


def test_a_side_effecting_call_still_claims_durably_before_its_handler(
    env: dict[str, str], state_dir: Path, tmp_path: Path, counter_file: Path
) -> None:
    # The contrast: armed at after_claim, a read_only call has no claim to die after, and runs;
    # the side-effecting count dies with its claim durable and never runs.
    with http_server({**env, "OPENEXEC_UNSAFE_FAULTS": "after_claim"}, tmp_path, name="armed") as server:
        read = server.execute("count_read", {"label": "read"}, fresh_nonce())
        assert read.status_code == 200 and read.json()["status"] == "executed"
    assert executions(counter_file) == 1
    nonce = fresh_nonce()
    crash_once(env, tmp_path, "after_claim", "count", nonce)
    assert executions(counter_file) == 1
    with http_server(env, tmp_path, name="restarted"):
        (cut_off,) = receipts(state_dir, nonce)
        assert cut_off["status"] == "indeterminate"
    assert_ledger_verifies(env)


def server_keys(server: ServerProcess) -> dict[str, Any]:
    keys: dict[str, Any] = httpx.get(server.base_url + "/keys", timeout=10).json()
    return keys


def test_a_server_killed_while_signing_a_checkpoint_loses_no_receipt_and_signs_on(
    env: dict[str, str], state_dir: Path, tmp_path: Path
) -> None:
    with http_server(env, tmp_path, name="first") as server:
        assert server.execute("echo", {"i": 1}, fresh_nonce()).status_code == 200
        first = httpx.get(server.base_url + "/ledger/checkpoint", timeout=10).text
    nonce = fresh_nonce()
    with http_server({**env, "OPENEXEC_UNSAFE_FAULTS": "in_checkpoint"}, tmp_path, name="crash-checkpoint") as server:
        # The call's receipt commits before any checkpoint; the batch checkpoint that may follow it
        # (5 s after start) dies like the one asked for, so its answer may be cut off.
        with contextlib.suppress(httpx.TransportError):
            server.execute("echo", {"i": 2}, nonce)
        with pytest.raises(httpx.TransportError):
            httpx.get(server.base_url + "/ledger/checkpoint", timeout=10)
        assert server.process.wait(timeout=30) == -signal.SIGKILL
    (committed,) = receipts(state_dir, nonce)
    assert committed["status"] == "executed"

    with http_server(env, tmp_path, name="restarted") as server:
        public_key = Ed25519PublicKey.from_public_bytes(base64.b64decode(server_keys(server)["keys"][0]["public_key"]))
        latest = httpx.get(server.base_url + "/ledger/checkpoint", timeout=10).text
        assert verify_checkpoint(first, "openexec-mcp", public_key).size == 1
        assert verify_checkpoint(latest, "openexec-mcp", public_key).size == 2
    assert_ledger_verifies(env)  # every receipt, and the tree root against the latest checkpoint


# -- the operator decides: ledger resolve ------------------------------------------------------


def test_mark_failed_makes_retries_replay_the_failure_and_rerun_is_refused_for_a_side_effect(
    env: dict[str, str], state_dir: Path, tmp_path: Path, counter_file: Path
) -> None:
    nonce = fresh_nonce()
    crash_once(env, tmp_path, "in_handler", "count_then_crash", nonce)
    with http_server(env, tmp_path, name="restarted") as server:
        (cut_off,) = receipts(state_dir, nonce)
        exec_id = cut_off["exec_id"]

        refused = run_cli("ledger", "resolve", exec_id, "--rerun", env=env)
        assert refused.returncode == 2
        assert "resolution_refused" in refused.stderr and "idempotent" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert len(receipts(state_dir)) == 1  # a refusal records nothing

        decided = run_cli("ledger", "resolve", exec_id, "--mark-failed", env=env)
        assert decided.returncode == 0, decided
        verdict = receipts(state_dir, nonce)[-1]
        assert (verdict["status"], verdict["error_code"], verdict["original_exec_id"]) == (
            "failed",
            "operator_marked_failed",
            exec_id,
        )
        assert verdict["exec_id"] in decided.stdout

        retry = server.execute("count_then_crash", {"label": "in_handler"}, nonce)
        assert retry.status_code == 200
        envelope = retry.json()
        assert envelope["status"] == "replayed"
        assert envelope["error"]["code"] == "operator_marked_failed"
        assert envelope["result"] is None
        body = verifier.verify_envelope(envelope, server_keys(server))
        assert body["original_exec_id"] == verdict["exec_id"]

        again = run_cli("ledger", "resolve", exec_id, "--mark-failed", env=env)
        assert again.returncode == 2 and "resolution_refused" in again.stderr
    assert executions(counter_file) == 1
    assert [b["status"] for b in receipts(state_dir, nonce)] == ["indeterminate", "failed", "replayed"]
    assert_ledger_verifies(env)


def test_rerun_runs_an_idempotent_action_exactly_once_more(
    env: dict[str, str], state_dir: Path, tmp_path: Path, counter_file: Path
) -> None:
    nonce = fresh_nonce()
    crash_once(env, tmp_path, "in_handler", "upsert_then_crash", nonce)
    assert executions(counter_file) == 1
    with http_server(env, tmp_path, name="restarted") as server:
        (cut_off,) = receipts(state_dir, nonce)
        before = server.execute("upsert_then_crash", {"label": "in_handler"}, nonce)
        assert error_code(before) == "outcome_unknown"  # idempotent or not, nothing re-runs by itself
        assert executions(counter_file) == 1

        rerun = run_cli("ledger", "resolve", cut_off["exec_id"], "--rerun", env=env)
        assert rerun.returncode == 0, rerun
        assert executions(counter_file) == 2
        decision = receipts(state_dir, nonce)[-1]
        assert (decision["status"], decision["original_exec_id"]) == ("executed", cut_off["exec_id"])

        retry = server.execute("upsert_then_crash", {"label": "in_handler"}, nonce)
        assert retry.status_code == 200
        assert (retry.json()["status"], retry.json()["result"]) == ("replayed", {"executions": 2})
        assert verifier.verify_envelope(retry.json(), server_keys(server))["original_exec_id"] == decision["exec_id"]

        for args in (("--rerun",), ("--mark-failed",)):
            again = run_cli("ledger", "resolve", cut_off["exec_id"], *args, env=env)
            assert again.returncode == 2 and "resolution_refused" in again.stderr
        unknown = run_cli("ledger", "resolve", "0" * 32, "--rerun", env=env)
        assert unknown.returncode == 2 and "resolution_refused" in unknown.stderr
    assert executions(counter_file) == 2
    assert [b["status"] for b in receipts(state_dir, nonce)] == ["indeterminate", "denied", "executed", "replayed"]
    assert_ledger_verifies(env)


# -- SIGTERM drains ------------------------------------------------------------------------------


def test_sigterm_over_http_lets_the_running_call_finish_with_its_receipt(
    env: dict[str, str], state_dir: Path, tmp_path: Path, counter_file: Path
) -> None:
    release = tmp_path / "release"
    nonce = fresh_nonce()
    with http_server(env, tmp_path, name="draining") as server, ThreadPoolExecutor(1) as pool:
        keys = server_keys(server)
        running = pool.submit(server.execute, "hold", {"release": str(release)}, nonce)
        wait_for(lambda: executions(counter_file) == 1, "the call to be running")

        server.process.send_signal(signal.SIGTERM)
        wait_for(lambda: ready_status(server.base_url) == 503, "/ready to answer 503 while draining")
        refused = server.execute("count", {}, fresh_nonce())
        assert (refused.status_code, error_code(refused)) == (503, "shutting_down")
        assert server.process.poll() is None  # still draining: the call is running

        release.touch()
        answer = running.result(timeout=60)
        assert answer.status_code == 200
        assert answer.json()["status"] == "executed"
        verifier.verify_envelope(answer.json(), keys)
        assert server.process.wait(timeout=30) == 0
    assert executions(counter_file) == 1  # the refused call never ran
    assert [body["status"] for body in receipts(state_dir, nonce)] == ["executed"]


class StdioSession:
    """Raw newline-delimited JSON-RPC over a server's stdin and stdout, read on a thread."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self._lines: queue.Queue[bytes] = queue.Queue()
        assert process.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self._reader.start()
        self._next_id = 0

    def _read(self, stream: Any) -> None:
        for line in iter(stream.readline, b""):
            self._lines.put(line)

    def send(self, method: str, params: dict[str, Any], *, notify: bool = False) -> int:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
        if not notify:
            self._next_id += 1
            message["id"] = self._next_id
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        self.process.stdin.flush()
        return self._next_id

    def response(self, request_id: int) -> dict[str, Any]:
        while True:
            message = json.loads(self._lines.get(timeout=60))
            if message.get("id") == request_id:
                return message

    def call_tool(self, name: str, arguments: dict[str, Any]) -> int:
        return self.send("tools/call", {"name": name, "arguments": arguments})

    def close(self) -> None:
        stop(self.process)
        self._reader.join(timeout=15)


@pytest.fixture
def stdio_server(env: dict[str, str], tmp_path: Path) -> Iterator[StdioSession]:
    with (tmp_path / "stdio-stderr.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "openexec_mcp", "serve", "--log-level", "WARNING"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
        )
        session = StdioSession(process)
        try:
            yield session
        finally:
            assert process.stdin is not None
            process.stdin.close()
            session.close()
            assert process.stdout is not None
            process.stdout.close()


def test_sigterm_over_stdio_lets_the_running_call_finish_with_its_receipt(
    stdio_server: StdioSession, state_dir: Path, tmp_path: Path, counter_file: Path
) -> None:
    session = stdio_server
    hello = session.send(
        "initialize",
        {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "drain-test", "version": "0"}},
    )
    assert "result" in session.response(hello)
    session.send("notifications/initialized", {}, notify=True)
    release = tmp_path / "release"
    nonce = fresh_nonce()
    running = session.call_tool("hold", {"release": str(release), "nonce": nonce})
    wait_for(lambda: executions(counter_file) == 1, "the call to be running")

    session.process.send_signal(signal.SIGTERM)
    refused = session.response(session.call_tool("count", {"nonce": fresh_nonce()}))
    assert refused["result"]["isError"] is True
    assert refused["result"]["structuredContent"]["error"]["code"] == "shutting_down"
    assert session.process.poll() is None

    release.touch()
    answer = session.response(running)["result"]
    assert answer["isError"] is False
    assert answer["structuredContent"]["status"] == "executed"
    assert session.process.wait(timeout=30) == 0
    assert executions(counter_file) == 1
    (receipt,) = receipts(state_dir, nonce)
    assert receipt["status"] == "executed"
    assert receipt["exec_id"] == answer["structuredContent"]["exec_id"]
