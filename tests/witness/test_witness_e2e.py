"""Witnessed ledger end to end (SPEC §14): two witness processes and one execution server on loopback.

Everything is a real process: ``openexec-mcp witness serve`` twice, ``openexec-mcp serve --transport
http`` with ``[[ledger.witnesses]]``, the CLI verifiers, and a doctored server script that holds
the real log key. Waits poll ``GET /health`` (bounded), never sleep for a fixed time.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import server_env
from oe_testing.cosignature_verifier import checkpoint_fields, verify_cosignature, verify_log_signature
from oe_testing.http_server import free_port
from oe_testing.nonces import fresh_nonce
from oe_testing.processes import ServerProcess, http_server, run_cli, stop, wait_for

from openexec_mcp.keystore import load_or_create_server_key

pytestmark = pytest.mark.slow

ORIGIN = "openexec-mcp"


@dataclass
class WitnessProcess:
    name: str
    port: int
    key: Path
    db: Path
    log: Path
    public_raw: bytes
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def flag(self) -> str:
        return f"{self.name}={base64.b64encode(self.public_raw).decode()}"


def start_witness(witness: WitnessProcess, env: dict[str, str], server_public: str) -> None:
    handle = witness.log.open("ab")
    witness.process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "openexec_mcp",
            "witness",
            "serve",
            "--key",
            str(witness.key),
            "--name",
            witness.name,
            "--log",
            f"{ORIGIN}={server_public}",
            "--db",
            str(witness.db),
            "--port",
            str(witness.port),
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=handle,
    )
    handle.close()

    def up() -> bool:
        assert witness.process is not None and witness.process.poll() is None, witness.log.read_text()
        try:
            return httpx.get(witness.url + "/", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, f"witness {witness.name} to listen")


@dataclass
class Deployment:
    root: Path
    env: dict[str, str]
    state_dir: Path
    server_public: str
    witnesses: list[WitnessProcess]
    config: Path


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    state_dir = tmp_path / "state"
    server_public = base64.b64encode(load_or_create_server_key(state_dir).public_raw).decode()
    env = server_env(state_dir)
    witnesses: list[WitnessProcess] = []
    for number in (1, 2):
        directory = tmp_path / f"witness{number}"
        name = f"witness{number}.example/w"
        key = directory / "key.pem"
        keyed = run_cli("witness", "key", "--key", str(key), "--name", name, env=env)
        assert keyed.returncode == 0, keyed.stderr
        public = base64.b64decode(keyed.stdout.splitlines()[0].split("=", 1)[1])
        witnesses.append(
            WitnessProcess(name, free_port(), key, directory / "state.db", tmp_path / f"w{number}.log", public)
        )
    config = tmp_path / "server.toml"
    entries = "".join(
        f'[[ledger.witnesses]]\nname = "{w.name}"\nurl = "{w.url}"\npublic_key = "{w.flag.split("=", 1)[1]}"\n\n'
        for w in witnesses
    )
    config.write_text(f"[ledger]\nwitness_interval_seconds = 0.1\n\n{entries}")
    for witness in witnesses:
        start_witness(witness, env, server_public)
    try:
        yield Deployment(tmp_path, env, state_dir, server_public, witnesses, config)
    finally:
        for witness in witnesses:
            if witness.process is not None:
                stop(witness.process)


@contextmanager
def execution_server(deployment: Deployment) -> Iterator[ServerProcess]:
    with http_server(deployment.env, deployment.root, "--config", str(deployment.config)) as server:
        yield server


def call(server: ServerProcess, run_id: str, count: int) -> list[str]:
    exec_ids = []
    for i in range(count):
        body = {"action": "echo", "payload": {"i": i}, "nonce": fresh_nonce(), "run_id": run_id}
        answer = httpx.post(server.base_url + "/execute", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        exec_ids.append(answer.json()["exec_id"])
    return exec_ids


def health(server: ServerProcess) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(server.base_url + "/health", timeout=10).json()
    return document


def wait_cosigned(server: ServerProcess, names: list[str], size: int) -> None:
    def done() -> bool:
        witnesses = health(server)["witnesses"]
        return all((witnesses[name]["cosigned_size"] or 0) >= size for name in names)

    wait_for(done, f"{names} to cosign size {size}", timeout=60)


def witnessed_checkpoint(server: ServerProcess) -> str:
    answer = httpx.get(server.base_url + "/ledger/checkpoint", params={"witnessed": "1"}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.text


def test_two_witnesses_cosign_the_ledger_and_a_bundle_verifies_offline(deployment: Deployment) -> None:
    w1, w2 = deployment.witnesses
    with execution_server(deployment) as server:
        exec_ids = call(server, "run-witnessed", 5)
        wait_cosigned(server, [w1.name, w2.name], 5)
        note = witnessed_checkpoint(server)
        # The independent verifier, from the C2SP texts alone: the log's line and both cosignatures.
        verify_log_signature(note, ORIGIN, base64.b64decode(deployment.server_public))
        for witness in (w1, w2):
            verify_cosignature(note, witness.name, witness.public_raw)
        assert checkpoint_fields(note)[1] >= 5
        # GET /ledger/checkpoint carries the lines collected for the checkpoint it returns.
        plain = httpx.get(server.base_url + "/ledger/checkpoint", timeout=10).text
        assert plain.startswith(note.split("\n\n")[0])
        # receipt verify --witness with the proof the server serves.
        envelope = httpx.post(
            server.base_url + "/execute",
            json={"action": "echo", "payload": {}, "nonce": fresh_nonce(), "run_id": "run-witnessed"},
            timeout=60,
        ).json()
        wait_cosigned(server, [w1.name, w2.name], 6)
        receipt, proof = deployment.root / "receipt.json", deployment.root / "proof.txt"
        receipt.write_text(json.dumps(envelope))
        proof.write_text(httpx.get(f"{server.base_url}/ledger/proof/{envelope['exec_id']}", timeout=10).text)
        verified = run_cli(
            "receipt",
            "verify",
            str(receipt),
            "--public-key",
            deployment.server_public,
            "--proof",
            str(proof),
            "--witness",
            w1.flag,
            "--witness",
            w2.flag,
            env=deployment.env,
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "OK cosigned by 2 witness(es)" in verified.stdout
    # The bundle, written from the stored ledger, checked offline with only the keys.
    bundle = deployment.root / "bundle.json"
    written = run_cli(
        "ledger",
        "bundle",
        "--config",
        str(deployment.config),
        "--run",
        "run-witnessed",
        "--out",
        str(bundle),
        env=deployment.env,
    )
    assert written.returncode == 0, written.stderr
    document = json.loads(bundle.read_text())
    assert document["v"] == 1 and len(document["receipts"]) == 6
    assert [item["index"] for item in document["receipts"]] == list(range(6))
    assert exec_ids  # the first five are in the run too
    ok = run_cli(
        "bundle",
        "verify",
        str(bundle),
        "--public-key",
        deployment.server_public,
        "--witness",
        w1.flag,
        "--witness",
        w2.flag,
        env=deployment.env,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    stranger = "stranger.example/w=" + base64.b64encode(bytes(32)).decode()
    refused = run_cli(
        "bundle",
        "verify",
        str(bundle),
        "--public-key",
        deployment.server_public,
        "--witness",
        w1.flag,
        "--witness",
        stranger,
        "--quorum",
        "2",
        env=deployment.env,
    )
    assert refused.returncode == 1 and refused.stdout.startswith("INVALID quorum_not_met"), refused.stdout


def test_a_witness_restarted_between_checkpoints_cosigns_from_the_size_it_kept(deployment: Deployment) -> None:
    w1, w2 = deployment.witnesses
    with execution_server(deployment) as server:
        call(server, "run-restart", 3)
        wait_cosigned(server, [w1.name, w2.name], 3)
        assert w2.process is not None
        stop(w2.process)  # down between two checkpoints
        call(server, "run-restart", 4)  # calls never wait for a witness
        wait_cosigned(server, [w1.name], 7)
        wait_for(lambda: health(server)["witnesses"][w2.name]["last_error"] is not None, "w2's failure to show")
        assert health(server)["witnesses"][w2.name]["cosigned_size"] == 3
        start_witness(w2, deployment.env, deployment.server_public)  # same key, same state file
        wait_cosigned(server, [w2.name], 7)
        note = witnessed_checkpoint(server)
        assert checkpoint_fields(note)[1] >= 7
        verify_cosignature(note, w2.name, w2.public_raw)
    # The restarted witness took the consistency proof from 3: its monitoring copy is at 7 or more.
    import hashlib

    monitored = httpx.get(f"{w2.url}/{hashlib.sha256(ORIGIN.encode()).hexdigest()}/checkpoint", timeout=10).text
    assert checkpoint_fields(monitored)[1] >= 7


def test_a_doctored_server_cannot_get_a_fork_cosigned_and_the_witness_logs_the_evidence(deployment: Deployment) -> None:
    w1, w2 = deployment.witnesses
    with execution_server(deployment) as server:
        call(server, "run-honest", 4)
        wait_cosigned(server, [w1.name, w2.name], 4)
    # The operator stops the honest server and, with the real log key, tries to fork the history.
    completed = subprocess.run(
        [sys.executable, "-m", "oe_testing.doctored_log", str(deployment.state_dir), ORIGIN, w1.url],
        env=deployment.env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert completed.returncode == 0, completed.stderr
    outcome = json.loads(completed.stdout)
    assert outcome["witness_size"] >= 4
    assert outcome["answers"] == {"same_size": 422, "forked_growth": 422, "rollback": 400}
    wait_for(lambda: w1.log.read_text().count("fork evidence") >= 2, "the fork evidence in the witness log")
    # The honest history still gets cosigned afterwards, from the size the witness kept.
    with execution_server(deployment) as server:
        call(server, "run-honest", 2)
        wait_cosigned(server, [w1.name, w2.name], outcome["witness_size"] + 2)


def test_the_witness_key_command_prints_name_and_vkey(deployment: Deployment) -> None:
    w1 = deployment.witnesses[0]
    printed = run_cli("witness", "key", "--key", str(w1.key), "--name", w1.name, env=deployment.env)
    flag, vkey = printed.stdout.splitlines()
    assert flag == w1.flag and vkey.startswith(w1.name + "+")


def test_a_server_that_lost_its_cosignature_records_resumes_from_the_size_the_witness_answers(
    deployment: Deployment,
) -> None:
    w1, w2 = deployment.witnesses
    with execution_server(deployment) as server:
        call(server, "run-lost", 3)
        wait_cosigned(server, [w1.name, w2.name], 3)
    (deployment.state_dir / "witnesses.db").unlink()  # the server forgets; the witnesses do not
    for suffix in ("-wal", "-shm"):
        (deployment.state_dir / f"witnesses.db{suffix}").unlink(missing_ok=True)
    with execution_server(deployment) as server:
        call(server, "run-lost", 2)  # old 0 gets 409 "3", then the proof from 3 is accepted
        wait_cosigned(server, [w1.name, w2.name], 5)
        note = witnessed_checkpoint(server)
        for witness in (w1, w2):
            verify_cosignature(note, witness.name, witness.public_raw)


def test_a_witness_runs_from_its_toml_config_and_cosigns(deployment: Deployment) -> None:
    w1, w2 = deployment.witnesses
    assert w2.process is not None
    stop(w2.process)  # w2 comes back configured by a file instead of flags, with the same key and state
    config = deployment.root / "w2.toml"
    config.write_text(
        f'name = "{w2.name}"\nkey = "{w2.key}"\ndb = "{w2.db}"\nport = {w2.port}\n\n'
        f'[[logs]]\norigin = "{ORIGIN}"\npublic_key = "{deployment.server_public}"\n'
    )
    handle = w2.log.open("ab")
    w2.process = subprocess.Popen(
        [sys.executable, "-m", "openexec_mcp", "witness", "serve", "--config", str(config)],
        env=deployment.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=handle,
    )
    handle.close()
    wait_for(lambda: _listening(w2.url), "w2 to listen")
    with execution_server(deployment) as server:
        call(server, "run-config", 2)
        wait_cosigned(server, [w1.name, w2.name], 2)


def _listening(url: str) -> bool:
    try:
        return httpx.get(url + "/", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
