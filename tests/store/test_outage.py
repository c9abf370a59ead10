"""A PostgreSQL outage under a running server (SPEC §4, §8): fail cleanly, run nothing, recover alone.

The test owns a throw-away cluster (``.ci/postgres.sh`` in its own directory, on its own port),
because stopping the shared one would break the other tests. It stops PostgreSQL under a live
``serve --transport http`` process and checks:

- calls answer ``store_unavailable`` (HTTP 503) and nothing runs; ``/ready`` answers 503;
- a call whose handler was running when the database went away ran once, says its outcome was
  not recorded, and is never re-run: ``in_progress`` while its replica lives, ``outcome_unknown``
  once a restart has recorded it ``indeterminate``;
- after PostgreSQL is back, the same process serves again without a restart of its own, and the
  ledger verifies.

Needs ``OPENEXEC_TEST_POSTGRES_URL`` (the sign that PostgreSQL is installed and wanted); skips
without it, fails under ``CI=true``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import server_env
from oe_testing import verifier
from oe_testing.actions import executions
from oe_testing.http_server import free_port
from oe_testing.nonces import fresh_nonce
from oe_testing.postgres import ThrowawayCluster, require_postgres
from oe_testing.processes import CRASH_ACTION_MODULES, error_code, http_server, ready_status, run_cli, wait_for

from openexec_mcp.store import open_store

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster() -> Iterator[ThrowawayCluster]:
    require_postgres()
    # Under /tmp, not pytest's tmp_path: as root the cluster runs as the postgres user, who must reach it.
    made = ThrowawayCluster(Path(tempfile.mkdtemp(prefix="openexec-pg-outage-")), free_port())
    try:
        made.create()
        yield made
    finally:
        made.destroy()


def test_a_postgres_outage_fails_calls_cleanly_and_the_server_recovers_by_itself(
    cluster: ThrowawayCluster, state_dir: Path, tmp_path: Path, counter_file: Path
) -> None:
    env = server_env(state_dir, OPENEXEC_ACTIONS__MODULES=CRASH_ACTION_MODULES, OPENEXEC_STORAGE__URL=cluster.url)
    release = tmp_path / "release"
    cut = fresh_nonce()
    refused = fresh_nonce()
    with http_server(env, tmp_path, name="before") as server, ThreadPoolExecutor(max_workers=1) as pool:
        keys: dict[str, Any] = httpx.get(server.base_url + "/keys", timeout=10).json()
        assert server.execute("count", {"label": "before"}, fresh_nonce()).json()["status"] == "executed"
        running = pool.submit(server.execute, "hold", {"release": str(release)}, cut)
        wait_for(lambda: executions(counter_file) == 2, "a call to be running")

        cluster.stop_server()
        # The database is gone: every call fails fast and cleanly, and nothing runs.
        for _ in range(3):
            answer = server.execute("count", {"label": "during"}, refused, timeout=30)
            assert (answer.status_code, error_code(answer)) == (503, "store_unavailable")
            assert answer.json()["status"] == "denied" and answer.json()["receipt_hash"] is None
            assert "Traceback" not in answer.text
        assert ready_status(server.base_url) == 503
        assert httpx.get(server.base_url + "/ready", timeout=10).json()["reason"] == "store_unavailable"
        assert executions(counter_file) == 2

        # The running call finishes, but its outcome cannot be recorded: it says so, and is not re-run.
        release.touch()
        lost = running.result(timeout=60)
        assert (lost.status_code, lost.json()["status"], error_code(lost)) == (500, "failed", "outcome_not_recorded")

        cluster.start_server()
        wait_for(lambda: ready_status(server.base_url) == 200, "/ready once PostgreSQL is back", timeout=60)
        assert server.process.poll() is None  # the same process, no restart
        # A call refused during the outage recorded nothing, so its retry runs now, once.
        retried = server.execute("count", {"label": "during"}, refused)
        assert (retried.status_code, retried.json()["status"]) == (200, "executed")
        verifier.verify_envelope(retried.json(), keys)
        # The cut-off call: claimed before the outage, still 'started' and owned by this live process.
        again = server.execute("hold", {"release": str(release)}, cut)
        assert (again.status_code, error_code(again)) == (409, "in_progress")
        assert executions(counter_file) == 3

    # A restart records the cut-off call indeterminate; it never runs again.
    with http_server(env, tmp_path, name="after") as server:
        answer = server.execute("hold", {"release": str(release)}, cut)
        assert (answer.status_code, error_code(answer)) == (409, "outcome_unknown")
    assert executions(counter_file) == 3

    store = open_store(cluster.url)
    try:
        bodies = [verifier.decode_payload(json.loads(entry.envelope)) for entry in store.iter_entries()]
    finally:
        store.close()
    assert [(b["action"], b["status"]) for b in bodies] == [
        ("count", "executed"),
        ("count", "executed"),
        ("hold", "denied"),
        ("hold", "indeterminate"),
        ("hold", "denied"),
    ]
    audit = run_cli("ledger", "verify", env=env)
    assert audit.returncode == 0 and audit.stdout.startswith("OK 5 receipts"), audit
