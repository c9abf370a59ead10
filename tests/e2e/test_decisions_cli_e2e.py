"""``openexec-mcp approve --reject`` and ``--grant`` against a real server process (SPEC §13; issue 14)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import server_env
from oe_testing.approvals import GOV_PUBLIC_B64, write_private_key
from oe_testing.http_server import HttpServer, running_http_server
from oe_testing.processes import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path, counter_file: Path) -> Iterator[HttpServer]:
    env = server_env(tmp_path / "state", CLAWSHIELD_PUBLIC_KEY=GOV_PUBLIC_B64, OPENEXEC_MODE="clawshield")
    with running_http_server(env, tmp_path) as http:
        yield http


def execute(server: HttpServer, label: str, nonce: str) -> httpx.Response:
    body = {"action": "count", "payload": {"label": label}, "nonce": nonce}
    return httpx.post(server.base_url + "/execute", json=body, timeout=60)


def test_cli_reject_refuses_the_retry_and_cli_grant_runs_two_calls(server: HttpServer, tmp_path: Path) -> None:
    key = write_private_key(tmp_path / "gov.key")
    nonce = uuid.uuid4().hex
    request_id = execute(server, "wire", nonce).json()["approval_request"]["request_id"]
    rejected = run_cli(
        "approve", request_id, "--reject", "not this one", "--key", str(key), "--server", server.base_url, "--yes"
    )
    assert rejected.returncode == 0, rejected.stderr
    assert "submitted rejection" in rejected.stderr
    retry = execute(server, "wire", nonce)
    assert (retry.status_code, retry.json()["error"]["code"]) == (403, "approval_rejected")
    assert "not this one" in retry.json()["error"]["message"]

    request_id = execute(server, "x", uuid.uuid4().hex).json()["approval_request"]["request_id"]
    granted = run_cli(
        "approve",
        request_id,
        "--grant",
        "2",
        "--hours",
        "1",
        "--when",
        'args.label != "forbidden"',
        "--kid",
        "clawshield",
        "--key",
        str(key),
        "--server",
        server.base_url,
        "--yes",
    )
    assert granted.returncode == 0, granted.stderr
    assert [execute(server, label, uuid.uuid4().hex).json()["status"] for label in ("a", "b")] == ["executed"] * 2
    third = execute(server, "c", uuid.uuid4().hex)
    assert third.json()["error"]["code"] == "approval_grant_exhausted"
    bad = run_cli(
        "approve",
        "--grant",
        "1",
        "--when",
        "args.(",
        "--actions",
        "count",
        "--tenant",
        "default",
        "--kid",
        "clawshield",
        "--key",
        str(key),
        "--server",
        server.base_url,
        "--yes",
    )
    assert bad.returncode == 2 and "does not compile" in bad.stderr
