"""The README's "Running several replicas" and "Guarantees" commands work as written, on PostgreSQL.

The config and the bash block run unchanged but for what a reader would fill in: the database URL
(a fresh schema of the test cluster), the state directory, the token's hash, two free ports instead
of 8001 and 8002, and the CLI path (this interpreter). Then a replica is killed mid-call, another
start records the call ``indeterminate``, and the operator's lines of "Guarantees" find and decide it.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import server_env
from oe_testing.http_server import free_port
from oe_testing.postgres import fresh_schema, require_postgres
from oe_testing.processes import http_server

README = Path(__file__).resolve().parents[2] / "README.md"
CLI = f"{shlex.quote(sys.executable)} -m openexec_mcp"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("curl") is None or shutil.which("jq") is None, reason="needs curl and jq"),
]


def section(title: str) -> str:
    return README.read_text().split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def blocks(title: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section(title), flags=re.DOTALL)


def run_bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # Background servers are stopped however the script ends, so their pipes close.
    script = "trap 'kill $(jobs -p) 2>/dev/null || true; wait' EXIT\n" + script.replace(".venv/bin/openexec-mcp", CLI)
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_the_readme_replica_and_operator_commands_work_as_written(tmp_path: Path) -> None:
    (config,) = blocks("Running several replicas", "toml")
    (commands,) = blocks("Running several replicas", "bash")
    (operator,) = blocks("Guarantees", "bash")
    token = secrets.token_urlsafe(32)
    ports = {"8001": str(free_port()), "8002": str(free_port())}
    with fresh_schema(require_postgres()) as url:
        config = config.replace('"postgresql://openexec@db.internal:5432/openexec"', json.dumps(url))
        config = config.replace('"/var/lib/openexec-mcp"', json.dumps(str(tmp_path / "state")))
        config = config.replace('"…64 hex…"', json.dumps(hashlib.sha256(token.encode()).hexdigest()))
        config_file = tmp_path / "replicas.toml"
        config_file.write_text(config)
        for old, new in ports.items():
            commands = commands.replace(old, new)
        env = {**server_env(tmp_path / "unused"), "TOKEN": token}
        env.pop("OPENEXEC_STATE_DIR")
        env.pop("OPENEXEC_ACTIONS__MODULES")

        done = run_bash(commands, tmp_path, env)
        assert done.returncode == 0, done.stdout + done.stderr[-3000:]
        answers = [
            json.loads(part) for part in re.findall(r'\{"status".*?"receipt_hash":"[0-9a-f]{64}"\}', done.stdout)
        ]
        assert [answer["status"] for answer in answers] == ["executed", "replayed"]
        assert "OK 2 receipts verified" in done.stdout

        # A replica dies mid-call; the next start records the call indeterminate. The call has a
        # side effect: a read-only one commits once, after its handler, so a crash loses only a read.
        env["OPENEXEC_CONFIG"] = str(config_file)
        env["OPENEXEC_ACTIONS__MODULES"] = '["oe_testing.actions"]'
        headers = {"authorization": f"Bearer {token}"}
        body = {"action": "count", "payload": {"label": "cut"}, "nonce": "rep-cut-0001"}
        with http_server({**env, "OPENEXEC_UNSAFE_FAULTS": "before_finish"}, tmp_path, name="doomed") as doomed:
            with pytest.raises(httpx.TransportError):
                httpx.post(doomed.base_url + "/execute", json=body, headers=headers, timeout=30)
            assert doomed.process.wait(timeout=30) < 0
        with http_server(env, tmp_path, name="next") as replica:
            find, mark_failed, rerun = operator.split("\n.venv/bin/openexec-mcp ledger resolve ")
            found = run_bash(find, tmp_path, env)
            assert found.returncode == 0, found.stderr[-2000:]
            (exec_id,) = found.stdout.split()
            for line, code in ((mark_failed, 0), (rerun, 2)):  # decided once; the second decision is refused
                decided = run_bash(
                    ".venv/bin/openexec-mcp ledger resolve " + line.replace("EXEC_ID", exec_id), tmp_path, env
                )
                assert decided.returncode == code, decided.stdout + decided.stderr[-2000:]
            retry = httpx.post(replica.base_url + "/execute", json=body, headers=headers, timeout=30).json()
            assert (retry["status"], retry["error"]["code"]) == ("replayed", "operator_marked_failed")
