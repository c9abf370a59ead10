"""The ``openexec-mcp`` command line (SPEC §9): keys, offline receipt checks, ledger audit, config errors.

Exit codes are the contract: 0 success, 1 verification failed, 2 usage or config error (one line
on stderr, never a traceback). Exit-code and error-path tests run the real command in a
subprocess; the larger matrices of receipt forms call ``openexec_mcp.cli.main`` in process (the
same entry point, about a second cheaper per case on this machine).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import anyio
import pytest
import rfc8785
from conftest import server_env
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key
from oe_testing import verifier
from oe_testing.http_server import free_port
from oe_testing.processes import Cli, run_cli, run_cli_in_process

from openexec_mcp.gate.pipeline import CallContext
from openexec_mcp.runtime import Runtime


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, state_dir: Path) -> Cli:
    """Run ``openexec_mcp.cli.main`` in process with the state dir of the test."""
    monkeypatch.setenv("OPENEXEC_STATE_DIR", str(state_dir))
    return functools.partial(run_cli_in_process, capsys)


def assert_one_line_error(outcome: CompletedProcess[str]) -> None:
    assert outcome.returncode == 2, outcome
    assert "Traceback" not in outcome.stderr and "Traceback" not in outcome.stdout
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, outcome.stderr


RECEIPT_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("echo", {"i": 0, "nonce": "cli-nonce-0"}),  # seq 0 executed
    ("echo", {"i": 0, "nonce": "cli-nonce-0"}),  # seq 1 replayed
    ("echo", {"i": 1, "nonce": "cli-nonce-0"}),  # seq 2 denied, nonce_conflict
    ("boom", {"nonce": "cli-nonce-3"}),  # seq 3 failed
    ("add", {"a": 1, "b": 2, "nonce": "cli-nonce-4"}),  # seq 4 executed
]


def make_receipts(runtime: Runtime) -> list[dict[str, Any]]:
    """Run :data:`RECEIPT_CALLS` through the real gate; return their result envelopes."""

    async def calls() -> list[dict[str, Any]]:
        envelopes = []
        for name, arguments in RECEIPT_CALLS:
            context = CallContext(tenant_id=runtime.settings.tenant_id, run_id="cli-test")
            envelopes.append((await runtime.gate.call(name, arguments, context)).envelope)
        return envelopes

    made = anyio.run(calls)
    assert [envelope["status"] for envelope in made] == ["executed", "replayed", "denied", "failed", "executed"]
    return made


@pytest.fixture
def envelopes(make_runtime: Callable[..., Runtime]) -> list[dict[str, Any]]:
    """Five receipts of every status in the test's state dir; the runtime is closed afterwards."""
    runtime = make_runtime()
    made = make_receipts(runtime)
    runtime.close()
    return made


@pytest.fixture
def env(state_dir: Path) -> dict[str, str]:
    return server_env(state_dir)


@pytest.fixture
def keys_json(cli: Cli, envelopes: list[dict[str, Any]]) -> str:
    outcome = cli("keys", "public")
    assert outcome.returncode == 0, outcome
    return outcome.stdout


def write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value))
    return path


def public_key_forms(keys_json: str, tmp_path: Path) -> dict[str, str]:
    raw_b64 = json.loads(keys_json)["keys"][0]["public_key"]
    pem = Ed25519PublicKey.from_public_bytes(base64.b64decode(raw_b64)).public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
    )
    pem_file = tmp_path / "server.pub.pem"
    pem_file.write_bytes(pem)
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(keys_json)
    return {"base64": raw_b64, "pem-file": str(pem_file), "keys-json-file": str(keys_file)}


# -- keys public -------------------------------------------------------------------------------------


def test_keys_public_prints_the_get_keys_document(env: dict[str, str], make_runtime: Callable[..., Runtime]) -> None:
    outcome = run_cli("keys", "public", env=env)
    assert outcome.returncode == 0, outcome
    document = json.loads(outcome.stdout)
    assert set(document) == {"keys"}
    (entry,) = document["keys"]
    assert set(entry) == {"kid", "alg", "public_key"}
    assert entry["alg"] == "Ed25519"
    raw = base64.b64decode(entry["public_key"], validate=True)
    assert len(raw) == 32
    assert entry["kid"] == hashlib.sha256(raw).hexdigest()[:16]
    # The same key the server signs with when it starts on this state dir.
    runtime = make_runtime()
    assert runtime.server_key.public_raw == raw
    assert run_cli("keys", "public", env=env).stdout == outcome.stdout


def test_keys_public_creates_the_server_key_private_to_the_owner(state_dir: Path, env: dict[str, str]) -> None:
    outcome = run_cli("keys", "public", env=env)
    assert outcome.returncode == 0, outcome
    assert "PRIVATE" not in outcome.stdout
    key_files = list(state_dir.glob("*.pem"))
    assert len(key_files) == 1
    assert key_files[0].stat().st_mode & 0o777 == 0o600


# -- receipt verify ------------------------------------------------------------------------------------


def test_receipt_verify_accepts_a_real_receipt_in_a_subprocess(
    envelopes: list[dict[str, Any]], keys_json: str, tmp_path: Path, env: dict[str, str]
) -> None:
    receipt_file = write_json(tmp_path / "receipt.json", envelopes[2]["receipt"])
    key = json.loads(keys_json)["keys"][0]["public_key"]
    outcome = run_cli("receipt", "verify", str(receipt_file), "--public-key", key, env=env)
    assert outcome.returncode == 0, outcome
    assert outcome.stdout.startswith("OK")
    assert envelopes[2]["exec_id"] in outcome.stdout and "seq=2" in outcome.stdout


@pytest.mark.parametrize("key_form", ["base64", "pem-file", "keys-json-file"])
@pytest.mark.parametrize("document", ["dsse-receipt", "result-envelope"])
def test_receipt_verify_exits_0_for_a_real_receipt(
    cli: Cli,
    envelopes: list[dict[str, Any]],
    keys_json: str,
    tmp_path: Path,
    key_form: str,
    document: str,
) -> None:
    value = envelopes[1]["receipt"] if document == "dsse-receipt" else envelopes[1]
    receipt_file = write_json(tmp_path / "receipt.json", value)
    outcome = cli(
        "receipt", "verify", str(receipt_file), "--public-key", public_key_forms(keys_json, tmp_path)[key_form]
    )
    assert outcome.returncode == 0, outcome
    assert f"receipt_hash={envelopes[1]['receipt_hash']}" in outcome.stdout


def test_receipt_verify_exits_1_for_a_tampered_receipt_in_a_subprocess(
    envelopes: list[dict[str, Any]], keys_json: str, tmp_path: Path, env: dict[str, str]
) -> None:
    receipt_file = write_json(tmp_path / "tampered.json", verifier.tamper_payload(envelopes[0]["receipt"]))
    key = json.loads(keys_json)["keys"][0]["public_key"]
    outcome = run_cli("receipt", "verify", str(receipt_file), "--public-key", key, env=env)
    assert outcome.returncode == 1, outcome
    assert "Traceback" not in outcome.stderr
    assert "INVALID" in outcome.stdout


def _other_server_keys(tmp_path: Path) -> str:
    other = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(other).decode()


TAMPERS: dict[str, Callable[[list[dict[str, Any]]], Any]] = {
    "one-payload-byte": lambda envs: verifier.tamper_payload(envs[0]["receipt"]),
    "swapped-signature": lambda envs: verifier.swap_signatures(envs[0]["receipt"], envs[1]["receipt"]),
    "no-signature": lambda envs: {**envs[0]["receipt"], "signatures": []},
    "wrong-payload-type": lambda envs: {**envs[0]["receipt"], "payloadType": "application/json"},
    "envelope-with-wrong-receipt-hash": lambda envs: {**envs[0], "receipt_hash": envs[1]["receipt_hash"]},
    "not-an-envelope": lambda envs: [envs[0]["receipt"]],
    # A whole result envelope whose result its receipt's result_hash does not cover (SPEC §6, §7).
    "envelope-with-another-result": lambda envs: {**envs[0], "result": {"echo": {"msg": "not what was signed"}}},
    "envelope-with-its-result-dropped": lambda envs: {**envs[0], "result": None},
    "denial-envelope-with-a-result-added": lambda envs: {**envs[2], "result": {"echo": {"msg": "never ran"}}},
}
RESULT_TAMPERS = frozenset(name for name in TAMPERS if "result" in name)


@pytest.mark.parametrize("name", list(TAMPERS))
def test_receipt_verify_exits_1_for_a_tampered_receipt(
    cli: Cli, envelopes: list[dict[str, Any]], keys_json: str, tmp_path: Path, name: str
) -> None:
    receipt_file = write_json(tmp_path / "tampered.json", TAMPERS[name](envelopes))
    key = json.loads(keys_json)["keys"][0]["public_key"]
    outcome = cli("receipt", "verify", str(receipt_file), "--public-key", key)
    assert outcome.returncode == 1, outcome
    assert outcome.stdout.startswith("INVALID")
    if name in RESULT_TAMPERS:
        assert outcome.stdout.startswith("INVALID result_mismatch:"), outcome
        with pytest.raises(verifier.ReceiptInvalid, match="result_mismatch"):  # the independent verifier agrees
            verifier.verify_envelope(TAMPERS[name](envelopes), json.loads(keys_json))


def test_receipt_verify_exits_1_under_another_servers_key(
    cli: Cli, envelopes: list[dict[str, Any]], tmp_path: Path
) -> None:
    receipt_file = write_json(tmp_path / "receipt.json", envelopes[0]["receipt"])
    outcome = cli("receipt", "verify", str(receipt_file), "--public-key", _other_server_keys(tmp_path))
    assert outcome.returncode == 1, outcome


def test_receipt_verify_exits_2_for_an_unreadable_receipt_in_a_subprocess(
    keys_json: str, tmp_path: Path, env: dict[str, str]
) -> None:
    key = json.loads(keys_json)["keys"][0]["public_key"]
    outcome = run_cli("receipt", "verify", str(tmp_path / "missing.json"), "--public-key", key, env=env)
    assert_one_line_error(outcome)


def test_receipt_verify_exits_2_for_a_bad_key_in_a_subprocess(
    envelopes: list[dict[str, Any]], tmp_path: Path, env: dict[str, str]
) -> None:
    receipt_file = write_json(tmp_path / "receipt.json", envelopes[0]["receipt"])
    outcome = run_cli("receipt", "verify", str(receipt_file), "--public-key", "not a key!", env=env)
    assert_one_line_error(outcome)


@pytest.mark.parametrize(
    "content", [b"", b"{not json", b"\xff\xfe\x00", b'{"a":1'], ids=["empty", "syntax", "binary", "truncated"]
)
def test_receipt_verify_exits_2_for_a_file_that_is_not_json(
    cli: Cli, keys_json: str, tmp_path: Path, content: bytes
) -> None:
    receipt_file = tmp_path / "receipt.json"
    receipt_file.write_bytes(content)
    key = json.loads(keys_json)["keys"][0]["public_key"]
    assert_one_line_error(cli("receipt", "verify", str(receipt_file), "--public-key", key))


def _x25519_pem(tmp_path: Path) -> str:
    path = tmp_path / "x25519.pem"
    path.write_bytes(
        X25519PrivateKey.generate().public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    return str(path)


BAD_KEYS: dict[str, Callable[[Path], str]] = {
    "garbage": lambda _: "not a key!",
    "empty": lambda _: "",
    "31-bytes": lambda _: base64.b64encode(b"\x01" * 31).decode(),
    "33-bytes": lambda _: base64.b64encode(b"\x01" * 33).decode(),
    "x25519-pem-file": _x25519_pem,
    "broken-pem": lambda _: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    "keys-json-without-keys": lambda _: '{"kid": "x"}',
    "missing-file": lambda tmp: str(tmp / "no-such-key.pem"),
}


@pytest.mark.parametrize("make_key", list(BAD_KEYS.values()), ids=list(BAD_KEYS))
def test_receipt_verify_exits_2_for_a_bad_public_key(
    cli: Cli, envelopes: list[dict[str, Any]], tmp_path: Path, make_key: Callable[[Path], str]
) -> None:
    receipt_file = write_json(tmp_path / "receipt.json", envelopes[0]["receipt"])
    assert_one_line_error(cli("receipt", "verify", str(receipt_file), "--public-key", make_key(tmp_path)))


# -- ledger verify -------------------------------------------------------------------------------------


def test_ledger_verify_exits_0_on_a_clean_ledger(envelopes: list[dict[str, Any]], env: dict[str, str]) -> None:
    outcome = run_cli("ledger", "verify", env=env)
    assert outcome.returncode == 0, outcome
    assert "5 receipts" in outcome.stdout
    assert verifier.receipt_hash(envelopes[-1]["receipt"]) in outcome.stdout


def test_ledger_verify_with_the_published_key_exits_0(
    cli: Cli, envelopes: list[dict[str, Any]], keys_json: str, tmp_path: Path
) -> None:
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(keys_json)
    assert cli("ledger", "verify", "--public-key", str(keys_file)).returncode == 0


def test_ledger_verify_under_another_servers_key_fails_at_seq_0(
    cli: Cli, envelopes: list[dict[str, Any]], tmp_path: Path
) -> None:
    outcome = cli("ledger", "verify", "--public-key", _other_server_keys(tmp_path))
    assert outcome.returncode == 1
    assert "seq 0" in outcome.stdout


def _db(state_dir: Path) -> sqlite3.Connection:
    db = sqlite3.connect(state_dir / "openexec.db", isolation_level=None)
    db.execute("DROP TRIGGER IF EXISTS ledger_no_update")
    return db


def _flip_base64_char(text: str, index: int) -> str:
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1 :]


def edit_payload_char(state_dir: Path, seq: int) -> None:
    """Change one character inside the stored base64 payload; leave receipt_hash as it was."""
    with _db(state_dir) as db:
        (text,) = db.execute("SELECT envelope FROM ledger WHERE seq = ?", (seq,)).fetchone()
        start = text.index('"payload":"') + len('"payload":"')
        db.execute("UPDATE ledger SET envelope = ? WHERE seq = ?", (_flip_base64_char(text, start + 40), seq))
    db.close()


def edit_receipt_hash(state_dir: Path, seq: int) -> None:
    with _db(state_dir) as db:
        (stored,) = db.execute("SELECT receipt_hash FROM ledger WHERE seq = ?", (seq,)).fetchone()
        db.execute(
            "UPDATE ledger SET receipt_hash = ? WHERE seq = ?", (("0" if stored[0] != "0" else "1") + stored[1:], seq)
        )
    db.close()


def edit_payload_byte_and_rehash(state_dir: Path, seq: int) -> None:
    """Change one byte of the payload and store a matching receipt_hash: only the signature catches it."""
    with _db(state_dir) as db:
        (text,) = db.execute("SELECT envelope FROM ledger WHERE seq = ?", (seq,)).fetchone()
        envelope = verifier.tamper_payload(json.loads(text))
        canonical = rfc8785.dumps(envelope).decode()
        db.execute(
            "UPDATE ledger SET envelope = ?, receipt_hash = ? WHERE seq = ?",
            (canonical, verifier.receipt_hash(envelope), seq),
        )
    db.close()


def edit_and_resign_with_server_key(state_dir: Path, seq: int) -> None:
    """An insider with the server key rewrites a row validly; the next row's ``prev`` exposes it."""
    key = load_pem_private_key((state_dir / "server_key.pem").read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    with _db(state_dir) as db:
        (text,) = db.execute("SELECT envelope FROM ledger WHERE seq = ?", (seq,)).fetchone()
        envelope = json.loads(text)
        body = verifier.decode_payload(envelope)
        body["nonce"] = "rewritten-nonce"
        payload = rfc8785.dumps(body)
        signature = key.sign(verifier.pae(verifier.RECEIPT_PAYLOAD_TYPE, payload))
        envelope = {
            **envelope,
            "payload": base64.b64encode(payload).decode(),
            "signatures": [{**envelope["signatures"][0], "sig": base64.b64encode(signature).decode()}],
        }
        db.execute(
            "UPDATE ledger SET envelope = ?, receipt_hash = ? WHERE seq = ?",
            (rfc8785.dumps(envelope).decode(), verifier.receipt_hash(envelope), seq),
        )
    db.close()


LEDGER_EDITS: dict[str, tuple[Callable[[Path, int], None], int]] = {
    # name: (edit applied to seq 2, first seq the audit must name)
    "payload-char": (edit_payload_char, 2),
    "receipt-hash": (edit_receipt_hash, 2),
    "payload-byte-rehashed": (edit_payload_byte_and_rehash, 2),
    "resigned-row-breaks-next-prev": (edit_and_resign_with_server_key, 3),
}


@pytest.mark.parametrize("edit", list(LEDGER_EDITS.values()), ids=list(LEDGER_EDITS))
def test_ledger_verify_names_the_first_bad_seq_after_an_edited_row(
    cli: Cli,
    envelopes: list[dict[str, Any]],
    state_dir: Path,
    edit: tuple[Callable[[Path, int], None], int],
) -> None:
    apply_edit, first_bad = edit
    assert cli("ledger", "verify").returncode == 0
    apply_edit(state_dir, 2)
    outcome = cli("ledger", "verify")
    assert outcome.returncode == 1, outcome
    assert f"seq {first_bad}" in outcome.stdout
    assert f"seq {first_bad - 1}:" not in outcome.stdout


def test_ledger_verify_in_a_subprocess_names_the_edited_seq(
    envelopes: list[dict[str, Any]], state_dir: Path, env: dict[str, str]
) -> None:
    edit_payload_char(state_dir, 2)
    outcome = run_cli("ledger", "verify", env=env)
    assert outcome.returncode == 1, outcome
    assert "seq 2" in outcome.stdout
    assert "Traceback" not in outcome.stderr


# -- configuration errors and the bind guard -----------------------------------------------------------


BAD_CONFIGS = {
    "unknown-key": "bogus_key = 1\n",
    "unknown-nested-key": "[limits]\nmax_payload_kilobytes = 1\n",
    "bogus-mode": 'mode = "bogus"\n',
    "toml-syntax": "mode = \n",
}


@pytest.mark.parametrize(
    "content", [BAD_CONFIGS["unknown-key"], BAD_CONFIGS["bogus-mode"]], ids=["unknown-key", "bogus-mode"]
)
def test_serve_with_invalid_config_exits_2_with_one_line_and_no_traceback(
    tmp_path: Path, env: dict[str, str], content: str
) -> None:
    config = tmp_path / "openexec.toml"
    config.write_text(content)
    outcome = run_cli("serve", "--config", str(config), env=env)
    assert_one_line_error(outcome)
    assert "config" in outcome.stderr


@pytest.mark.parametrize("content", list(BAD_CONFIGS.values()), ids=list(BAD_CONFIGS))
@pytest.mark.parametrize("command", [["keys", "public"], ["ledger", "verify"]], ids=["keys-public", "ledger-verify"])
def test_invalid_config_exits_2_with_one_line(cli: Cli, tmp_path: Path, content: str, command: list[str]) -> None:
    config = tmp_path / "openexec.toml"
    config.write_text(content)
    assert_one_line_error(cli(*command, "--config", str(config)))


def test_missing_config_file_exits_2_with_one_line(cli: Cli, tmp_path: Path) -> None:
    assert_one_line_error(cli("keys", "public", "--config", str(tmp_path / "absent.toml")))


@pytest.mark.parametrize(("transport", "host"), [("http", "0.0.0.0"), ("sse", "::")])
def test_serve_on_a_public_address_without_tokens_refuses_to_start(
    env: dict[str, str], transport: str, host: str
) -> None:
    outcome = run_cli("serve", "--transport", transport, "--host", host, "--port", str(free_port()), env=env)
    assert_one_line_error(outcome)
    assert host in outcome.stderr
