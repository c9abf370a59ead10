"""The ledger CLI (SPEC §9): export, timeline, replay, verify (--since), checkpoint, consistency.

Receipts are made through the real gate on a SQLite state dir, the runtime is closed, and the
commands run in process (``openexec_mcp.cli.main``) as an operator or auditor would run them.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import anyio
import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from oe_testing.processes import Cli, run_cli_in_process
from oe_testing.receipts import body_of_receipt

from openexec_mcp.cli.progress import Progress
from openexec_mcp.core.encoding import pae
from openexec_mcp.core.tlog.checkpoint import sign_checkpoint
from openexec_mcp.gate.pipeline import CallContext
from openexec_mcp.runtime import Runtime

MODULES = ["oe_testing.actions", "oe_testing.ledger_actions"]

RUN_A: list[tuple[str, dict[str, Any]]] = [
    ("echo", {"msg": "hi", "nonce": "run-a-0001"}),  # seq 0 executed
    ("echo", {"msg": "hi", "nonce": "run-a-0001"}),  # seq 1 replayed
    ("echo", {"msg": "other", "nonce": "run-a-0001"}),  # seq 2 denied, nonce_conflict
    ("count", {"nonce": "run-a-0003"}),  # seq 3 executed, side effects
    ("add", {"a": 2, "b": 40, "nonce": "run-a-0004"}),  # seq 4 executed
    ("boom", {"nonce": "run-a-0005"}),  # seq 5 failed
    ("executions_seen", {"nonce": "run-a-0006"}),  # seq 6 executed, read-only: {"executions": 1}
]
RUN_B: list[tuple[str, dict[str, Any]]] = [("add", {"a": i, "b": 1, "nonce": f"run-b-{i:04d}"}) for i in range(4)]


def call_all(runtime: Runtime, run_id: str, items: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        ctx = CallContext(tenant_id=runtime.settings.tenant_id, run_id=run_id)
        return [(await runtime.gate.call(name, dict(arguments), ctx)).envelope for name, arguments in items]

    return anyio.run(run)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, state_dir: Path) -> Cli:
    monkeypatch.setenv("OPENEXEC_STATE_DIR", str(state_dir))
    monkeypatch.setenv("OPENEXEC_ACTIONS__MODULES", json.dumps(MODULES))
    return functools.partial(run_cli_in_process, capsys)


@pytest.fixture
def ledger(make_runtime: Callable[..., Runtime]) -> list[dict[str, Any]]:
    """Run A (7 receipts of every kind) then run B (4 adds); the runtime is closed afterwards."""
    runtime = make_runtime(actions={"modules": MODULES})
    made = call_all(runtime, "run-A", RUN_A) + call_all(runtime, "run-B", RUN_B)
    runtime.close()
    assert [e["status"] for e in made[:7]] == [
        "executed",
        "replayed",
        "denied",
        "executed",
        "executed",
        "failed",
        "executed",
    ]
    return made


def db(state_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(state_dir / "openexec.db", isolation_level=None)


# -- export -------------------------------------------------------------------------------------------


def test_export_writes_one_json_object_a_line_whose_receipt_rehashes_to_its_receipt_hash(
    cli: Cli, ledger: list[dict[str, Any]]
) -> None:
    outcome = cli("ledger", "export")
    assert (outcome.returncode, outcome.stderr) == (0, "")
    lines = [json.loads(line) for line in outcome.stdout.splitlines()]
    assert [line["seq"] for line in lines] == list(range(11))
    for line, envelope in zip(lines, ledger, strict=True):
        assert set(line) == {"seq", "receipt_hash", "receipt"}
        assert line["receipt"] == envelope["receipt"]
        assert hashlib.sha256(b"\x00" + rfc8785.dumps(line["receipt"])).hexdigest() == line["receipt_hash"]


def test_export_filters_by_run_and_since_and_writes_to_a_file(
    cli: Cli, ledger: list[dict[str, Any]], tmp_path: Path
) -> None:
    only_b = cli("ledger", "export", "--run", "run-B")
    assert [json.loads(line)["seq"] for line in only_b.stdout.splitlines()] == [7, 8, 9, 10]
    since = cli("ledger", "export", "--run", "run-A", "--since", "4")
    assert [json.loads(line)["seq"] for line in since.stdout.splitlines()] == [4, 5, 6]
    out = tmp_path / "export.jsonl"
    assert cli("ledger", "export", "--since", "9", "--out", str(out)).stdout == ""
    assert [json.loads(line)["seq"] for line in out.read_text().splitlines()] == [9, 10]
    assert cli("ledger", "export", "--since", "-1").returncode == 2


# -- timeline -----------------------------------------------------------------------------------------


def test_timeline_shows_the_runs_attempts_in_order(cli: Cli, ledger: list[dict[str, Any]]) -> None:
    outcome = cli("ledger", "timeline", "run-A")
    assert outcome.returncode == 0, outcome
    header, *rows = outcome.stdout.splitlines()[1:]
    assert header.split() == ["SEQ", "TIME", "ACTION", "STATUS", "APPROVAL", "ERROR", "EXEC_ID"]
    cells = [row.split() for row in rows]
    assert [(c[0], c[2], c[3], c[4], c[5]) for c in cells] == [
        ("0", "echo", "executed", "auto", "-"),
        ("1", "echo", "replayed", "auto", "-"),
        ("2", "echo", "denied", "auto", "nonce_conflict"),
        ("3", "count", "executed", "auto", "-"),
        ("4", "add", "executed", "auto", "-"),
        ("5", "boom", "failed", "auto", "handler_error"),
        ("6", "executions_seen", "executed", "auto", "-"),
    ]
    assert [c[6] for c in cells] == [envelope["exec_id"] for envelope in ledger[:7]]


def test_timeline_of_an_unknown_run_exits_2_with_one_line(cli: Cli, ledger: list[dict[str, Any]]) -> None:
    outcome = cli("ledger", "timeline", "no-such-run")
    assert outcome.returncode == 2
    assert outcome.stderr.strip() == "openexec-mcp: the ledger holds no receipt of run 'no-such-run'"


# -- replay -------------------------------------------------------------------------------------------


def verdicts(outcome: CompletedProcess[str]) -> dict[int, str]:
    rows = [line.split() for line in outcome.stdout.splitlines()[1:-1]]  # between the header and the summary
    return {int(row[0]): row[3] for row in rows}


def test_replay_reruns_read_only_calls_lists_side_effects_and_matches(
    cli: Cli, ledger: list[dict[str, Any]], counter_file: Path
) -> None:
    before = counter_file.read_text()
    outcome = cli("ledger", "replay", "run-A")
    assert outcome.returncode == 0, outcome
    assert verdicts(outcome) == {
        0: "match",
        1: "match",
        2: "skipped",
        3: "side_effects",
        4: "match",
        5: "skipped",
        6: "match",
    }
    assert counter_file.read_text() == before  # count was not re-run
    assert "4 re-run and matched, 0 differ" in outcome.stdout


def test_replay_reports_a_result_that_differs_from_the_receipt(
    cli: Cli, ledger: list[dict[str, Any]], counter_file: Path
) -> None:
    counter_file.write_text(counter_file.read_text() + "outside\n")  # the world executions_seen reads has changed
    outcome = cli("ledger", "replay", "run-A")
    assert outcome.returncode == 1
    assert verdicts(outcome)[6] == "differs"
    assert "1 differ" in outcome.stdout


def test_replay_refuses_a_recorded_payload_that_does_not_hash_to_the_receipts_action_hash(
    cli: Cli, ledger: list[dict[str, Any]], state_dir: Path
) -> None:
    with db(state_dir) as conn:
        conn.execute(
            "UPDATE nonces SET request = ? WHERE nonce = 'run-a-0004'",
            ('{"action":"add","nonce":"run-a-0004","payload":{"a":2,"b":41}}',),
        )
    outcome = cli("ledger", "replay", "run-A")
    assert outcome.returncode == 1
    assert verdicts(outcome)[4] == "payload_mismatch"


def test_replay_of_side_effecting_calls_only_lists_them(cli: Cli, ledger: list[dict[str, Any]]) -> None:
    outcome = cli("ledger", "replay", "run-B")
    assert (outcome.returncode, set(verdicts(outcome).values())) == (0, {"match"})
    assert cli("ledger", "replay", "no-such-run").returncode == 2


# -- checkpoint, verify --since, consistency ----------------------------------------------------------


def keys_file(cli: Cli, tmp_path: Path) -> str:
    path = tmp_path / "keys.json"
    path.write_text(cli("keys", "public").stdout)
    return str(path)


def test_checkpoint_prints_a_signed_note_and_verify_checks_the_tree_against_it(
    cli: Cli, ledger: list[dict[str, Any]]
) -> None:
    first = cli("ledger", "checkpoint")
    assert first.returncode == 0
    assert first.stdout.splitlines()[:2] == ["openexec-mcp", "11"]
    assert cli("ledger", "checkpoint").stdout == first.stdout
    outcome = cli("ledger", "verify")
    assert outcome.returncode == 0, outcome
    assert "OK 11 receipts verified" in outcome.stdout
    assert "OK latest checkpoint (size 11) matches the receipts" in outcome.stdout


def test_verify_since_a_kept_checkpoint_then_detects_a_rewritten_history(
    cli: Cli,
    make_runtime: Callable[..., Runtime],
    state_dir: Path,
    tmp_path: Path,
) -> None:
    runtime = make_runtime(actions={"modules": MODULES})
    call_all(runtime, "run-A", RUN_A[:5])
    kept = tmp_path / "kept-checkpoint.txt"
    kept.write_text(runtime.ledger.checkpoint().note)
    call_all(runtime, "run-B", RUN_B)
    runtime.close()
    keys = keys_file(cli, tmp_path)
    outcome = cli("ledger", "verify", "--since", str(kept), "--public-key", keys)
    assert outcome.returncode == 0, outcome
    assert "OK consistent with the --since checkpoint (size 5)" in outcome.stdout

    # An insider with the server key rewrites seq 2 and re-chains everything after it, and drops the
    # stored checkpoints: every signature and link verifies, but not the checkpoint the auditor kept.
    rewrite_history_from(state_dir, 2)
    outcome = cli("ledger", "verify", "--since", str(kept), "--public-key", keys)
    assert outcome.returncode == 1, outcome
    assert outcome.stdout.startswith("FAILED: root_mismatch: the first 5 receipts are not those the --since checkpoint")


def rewrite_history_from(state_dir: Path, start: int) -> None:
    key = load_pem_private_key((state_dir / "server_key.pem").read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    with db(state_dir) as conn:
        for trigger in ("ledger_no_update", "checkpoints_no_delete", "merkle_nodes_no_delete"):
            conn.execute(f"DROP TRIGGER {trigger}")
        conn.execute("DELETE FROM checkpoints")
        rows = conn.execute("SELECT seq, envelope FROM ledger WHERE seq >= ? ORDER BY seq", (start,)).fetchall()
        (prev,) = conn.execute("SELECT receipt_hash FROM ledger WHERE seq = ?", (start - 1,)).fetchone()
        for seq, text in rows:
            envelope = json.loads(text)
            body = body_of_receipt(envelope)
            body["prev"] = prev
            if seq == start:
                body["nonce"] = "rewritten-nonce"
            payload = rfc8785.dumps(body)
            signature = key.sign(pae(envelope["payloadType"], payload))
            envelope["payload"] = base64.b64encode(payload).decode()
            envelope["signatures"][0]["sig"] = base64.b64encode(signature).decode()
            canonical = rfc8785.dumps(envelope)
            prev = hashlib.sha256(b"\x00" + canonical).hexdigest()
            conn.execute(
                "UPDATE ledger SET envelope = ?, receipt_hash = ? WHERE seq = ?", (canonical.decode(), prev, seq)
            )
        conn.execute("DELETE FROM merkle_nodes")  # rebuilt from the rewritten receipts at the next open


def test_verify_names_the_first_missing_seq_when_receipts_were_removed(
    cli: Cli, ledger: list[dict[str, Any]], state_dir: Path
) -> None:
    assert cli("ledger", "checkpoint").returncode == 0
    with db(state_dir) as conn:
        conn.execute("DROP TRIGGER ledger_no_delete")
        conn.execute("DELETE FROM ledger WHERE seq >= 9")
    outcome = cli("ledger", "verify")
    assert outcome.returncode == 1
    assert outcome.stdout.startswith("FAILED at seq 9: checkpoint_ahead:")


def test_verify_detects_tree_nodes_that_disagree_with_the_receipts(
    cli: Cli, ledger: list[dict[str, Any]], state_dir: Path
) -> None:
    with db(state_dir) as conn:
        conn.execute("DROP TRIGGER merkle_nodes_no_update")
        conn.execute("UPDATE merkle_nodes SET hash = zeroblob(32) WHERE level = 1 AND idx = 4")
    outcome = cli("ledger", "verify", "--workers", "0")
    assert outcome.returncode == 1
    assert outcome.stdout.startswith("FAILED: tree_mismatch:")


def test_verify_names_the_same_first_bad_seq_with_or_without_worker_threads(
    cli: Cli, ledger: list[dict[str, Any]], state_dir: Path
) -> None:
    with db(state_dir) as conn:
        conn.execute("DROP TRIGGER ledger_no_update")
        (text,) = conn.execute("SELECT envelope FROM ledger WHERE seq = 6").fetchone()
        envelope = json.loads(text)
        envelope["signatures"][0]["sig"] = base64.b64encode(bytes(64)).decode()  # a bad signature at 6
        canonical = rfc8785.dumps(envelope)
        conn.execute(
            "UPDATE ledger SET envelope = ?, receipt_hash = ? WHERE seq = 6",
            (canonical.decode(), hashlib.sha256(b"\x00" + canonical).hexdigest()),
        )
        conn.execute("UPDATE ledger SET exec_id = 'x' WHERE seq = 8")  # and a broken row later
    for workers in ("0", "1", "3"):
        outcome = cli("ledger", "verify", "--workers", workers)
        assert (outcome.returncode, outcome.stdout.split(":")[0:2]) == (1, ["FAILED at seq 6", " bad_signature"]), (
            workers
        )


def test_consistency_checks_two_checkpoints_offline(
    cli: Cli,
    make_runtime: Callable[..., Runtime],
    state_dir: Path,
    tmp_path: Path,
) -> None:
    runtime = make_runtime(actions={"modules": MODULES})
    call_all(runtime, "run-A", RUN_A[:3])
    old = runtime.ledger.checkpoint()
    call_all(runtime, "run-B", RUN_B)
    answer = runtime.ledger.consistency(old.size)
    assert answer.checkpoint is not None
    forked_old = sign_checkpoint("openexec-mcp", old.size, bytes(32), runtime.server_key.private_key)
    runtime.close()
    files = {
        "old": old.note,
        "new": answer.checkpoint.note,
        "forked": forked_old,
        "proof": json.dumps(
            {
                "from": answer.old_size,
                "to": answer.new_size,
                "proof": [base64.b64encode(h).decode() for h in answer.proof],
            }
        ),
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    keys = keys_file(cli, tmp_path)

    def consistency(old_name: str, new_name: str) -> CompletedProcess[str]:
        return cli(
            "ledger",
            "consistency",
            str(tmp_path / old_name),
            str(tmp_path / new_name),
            "--proof",
            str(tmp_path / "proof"),
            "--public-key",
            keys,
        )

    ok = consistency("old", "new")
    assert ok.returncode == 0, ok
    assert ok.stdout.startswith("OK checkpoint 7 of openexec-mcp extends checkpoint 3")
    forked = consistency("forked", "new")
    assert (forked.returncode, forked.stdout.split(":")[1].strip()) == (1, "root_mismatch")
    swapped = consistency("new", "old")
    assert (swapped.returncode, swapped.stdout.split(":")[1].strip()) == (1, "size_mismatch")
    assert (
        cli(
            "ledger",
            "consistency",
            str(tmp_path / "old"),
            str(tmp_path / "missing"),
            "--proof",
            str(tmp_path / "proof"),
            "--public-key",
            keys,
        ).returncode
        == 2
    )


# -- progress ---------------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_on_a_terminal_and_stays_quiet_when_piped() -> None:
    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        progress = Progress("verify", 200, stream=stream, interval_seconds=0)
        for done in (50, 100):
            progress.update(done)
        progress.close(200)
    assert terminal.getvalue() == "\rverify: 50/200 (25%)\rverify: 100/200 (50%)\rverify: 200/200 (100%)\n"
    assert pipe.getvalue() == ""


def test_long_commands_write_nothing_to_a_piped_stderr(cli: Cli, ledger: list[dict[str, Any]]) -> None:
    for args in (("ledger", "verify"), ("ledger", "export"), ("ledger", "replay", "run-A")):
        assert cli(*args).stderr == "", args
