"""An auditor's view, end to end: random calls through the real gate and HTTP surface, checkpoints
kept along the way, then every kept checkpoint proven consistent with the newest and every receipt
proven included, with the HTTP routes and with the CLI, trusting only ``GET /keys``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from oe_testing.processes import run_cli_in_process

from openexec_mcp.core.encoding import b64decode_strict
from openexec_mcp.core.evidence import (
    verify_checkpoint_consistency,
    verify_receipt_inclusion,
    verify_signed_checkpoint,
)
from openexec_mcp.core.receipt import parse_server_public_keys
from openexec_mcp.runtime import Runtime
from openexec_mcp.transport.http.app import build_http_app

pytestmark = pytest.mark.anyio


def random_call(rng: random.Random, used: list[str]) -> dict[str, Any]:
    """One random call: a fresh nonce mostly, else a used one (a replay or a nonce conflict)."""
    nonce = rng.choice(used) if used and rng.random() < 0.2 else f"audit-{rng.getrandbits(48):012x}"
    used.append(nonce)
    action, payload = rng.choice(
        [
            ("echo", {"n": rng.randint(0, 3)}),
            ("add", {"a": rng.randint(0, 9), "b": rng.random()}),
            ("count", {"label": "audit"}),
            ("boom", {}),
            ("add", {"a": "not a number", "b": 1}),
        ]
    )
    return {"action": action, "payload": payload, "nonce": nonce, "run_id": f"audit-run-{rng.randint(0, 2)}"}


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_an_auditor_holding_only_the_public_key_checks_history_and_inclusion(
    seed: int,
    make_runtime: Callable[..., Runtime],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    state_dir: Path,
) -> None:
    rng = random.Random(seed)
    runtime = make_runtime()
    app = build_http_app(runtime, host="127.0.0.1", port=8000)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
        keys_text = (await http.get("/keys")).text
        keys = parse_server_public_keys(keys_text)
        kept: list[str] = []
        envelopes: list[dict[str, Any]] = []
        used: list[str] = []
        for _ in range(rng.randint(3, 6)):
            for _ in range(rng.randint(0, 12)):
                answer = (await http.post("/execute", json=random_call(rng, used))).json()
                if answer.get("receipt") is not None:  # invalid_request records nothing
                    envelopes.append(answer)
            kept.append((await http.get("/ledger/checkpoint")).text)
        newest_note = (await http.get("/ledger/checkpoint")).text
        newest = verify_signed_checkpoint(newest_note, keys, origin="openexec-mcp")
        assert newest.size == len(envelopes)

        # (1) Every checkpoint kept is a prefix of the newest: the ledger was never rewritten.
        proofs: list[dict[str, Any]] = []
        for note in kept:
            old = verify_signed_checkpoint(note, keys, origin="openexec-mcp")
            answer = (await http.get("/ledger/consistency", params={"from": old.size, "to": newest.size})).json()
            verify_checkpoint_consistency(old, newest, [b64decode_strict(value) for value in answer["proof"]])
            proofs.append(answer)
        # (2) Every receipt is in the ledger.
        inclusion: dict[str, str] = {}
        for envelope in envelopes:
            text = (await http.get(f"/ledger/proof/{envelope['exec_id']}")).text
            evidence = verify_receipt_inclusion(envelope["receipt"], text, keys)
            assert evidence.receipt_hash == envelope["receipt_hash"]
            inclusion[envelope["exec_id"]] = text
    runtime.close()

    # (3) The same, with the CLI and files, as the README shows.
    def cli(*args: str) -> tuple[int, str]:
        done = run_cli_in_process(capsys, *args)
        return done.returncode, done.stdout

    keys_file = tmp_path / "keys.json"
    keys_file.write_text(keys_text)
    (tmp_path / "newest.txt").write_text(newest_note)
    for index, (note, answer) in enumerate(zip(kept, proofs, strict=True)):
        (tmp_path / f"old-{index}.txt").write_text(note)
        (tmp_path / f"proof-{index}.json").write_text(json.dumps(answer))
        code, out = cli(
            "ledger",
            "consistency",
            str(tmp_path / f"old-{index}.txt"),
            str(tmp_path / "newest.txt"),
            "--proof",
            str(tmp_path / f"proof-{index}.json"),
            "--public-key",
            str(keys_file),
        )
        assert code == 0, out
    for envelope in envelopes:
        (tmp_path / "receipt.json").write_text(json.dumps(envelope))
        (tmp_path / "proof.txt").write_text(inclusion[envelope["exec_id"]])
        code, out = cli(
            "receipt",
            "verify",
            str(tmp_path / "receipt.json"),
            "--public-key",
            str(keys_file),
            "--proof",
            str(tmp_path / "proof.txt"),
        )
        assert code == 0, out
        assert f"size={newest.size}" in out
    monkeypatch.setenv("OPENEXEC_STATE_DIR", str(state_dir))
    code, out = cli("ledger", "verify", "--since", str(tmp_path / "old-0.txt"), "--public-key", str(keys_file))
    assert code == 0, out
