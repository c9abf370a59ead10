"""The README's "Auditing the ledger" commands work as written, against a real server.

The bash blocks of that section run unchanged but for the server URL (a free port instead of 8000),
the CLI path (this interpreter instead of ``.venv/bin/openexec-mcp``) and ``RUN_ID`` (the run of the
receipt the first block made).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import server_env
from oe_testing.http_server import running_http_server
from oe_testing.receipts import body_of_receipt

README = Path(__file__).resolve().parents[2] / "README.md"


def audit_blocks() -> list[str]:
    text = README.read_text()
    section = text.split("## Auditing the ledger", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)


def run_block(block: str, base_url: str, cwd: Path, env: dict[str, str], run_id: str = "") -> str:
    cli = f"{shlex.quote(sys.executable)} -m openexec_mcp"
    script = block.replace("http://127.0.0.1:8000", base_url).replace(".venv/bin/openexec-mcp", cli)
    script = script.replace("RUN_ID", run_id)
    completed = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("jq") is None, reason="needs curl and jq")
def test_the_readme_audit_commands_work_as_written(tmp_path: Path) -> None:
    auditor, operator = audit_blocks()
    state_dir = tmp_path / "state"
    env = server_env(state_dir)
    with running_http_server(env, tmp_path) as server:
        work = tmp_path / "auditor"
        work.mkdir()
        out = run_block(auditor, server.base_url, work, env)
        assert re.search(r"^OK seq=\d+ exec_id=\w+ status=executed action=echo", out, flags=re.MULTILINE), out
        assert re.search(r"^OK included at index \d+ of checkpoint openexec-mcp size=\d+", out, flags=re.MULTILINE), out
        assert re.search(r"^OK checkpoint 2 of openexec-mcp extends checkpoint 1", out, flags=re.MULTILINE), out

        receipt = json.loads((work / "receipt.json").read_text())["receipt"]
        run_id = body_of_receipt(receipt)["run_id"]
        out = run_block(operator, server.base_url, work, env, run_id=run_id)
    assert "OK consistent with the --since checkpoint (size 1)" in out
    assert "1 re-run and matched, 0 differ" in out
    exported = [json.loads(line) for line in (work / "receipts.jsonl").read_text().splitlines()]
    assert [line["receipt"] for line in exported] == [receipt]
