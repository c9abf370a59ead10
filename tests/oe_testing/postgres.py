"""PostgreSQL for the replica tests: the shared test cluster, a fresh schema per test, a throw-away cluster.

The shared cluster's URL comes from ``OPENEXEC_TEST_POSTGRES_URL`` (``python3 dev.py test`` and
``.ci/postgres.sh start`` provide one). Without it the tests skip and say why, except under
``CI=true``, where they fail: CI must run them. The variable is read at import, because the
autouse ``clean_environment`` fixture removes ``OPENEXEC_*`` before every test.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

POSTGRES_URL = os.environ.get("OPENEXEC_TEST_POSTGRES_URL", "")
IN_CI = os.environ.get("CI", "").lower() == "true"
NO_POSTGRES = (
    "PostgreSQL not available: set OPENEXEC_TEST_POSTGRES_URL "
    "(python3 dev.py test starts a cluster when PostgreSQL binaries are installed)"
)
REPO = Path(__file__).resolve().parents[2]


def require_postgres() -> str:
    """Return the shared cluster's URL; skip without one (fail under ``CI=true``)."""
    if not POSTGRES_URL:
        if IN_CI:
            pytest.fail(f"{NO_POSTGRES}; CI=true requires the PostgreSQL tests to run")
        pytest.skip(NO_POSTGRES)
    return POSTGRES_URL


@contextmanager
def fresh_schema(base_url: str) -> Iterator[str]:
    """Yield a URL on a new, empty schema of the test database (``search_path`` in the URL); drop it after."""
    import psycopg
    from psycopg import sql

    schema = f"oe_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(base_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    separator = "&" if "?" in base_url else "?"
    try:
        yield f"{base_url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@dataclass
class ThrowawayCluster:
    """A private PostgreSQL cluster (``.ci/postgres.sh`` in its own directory and port) to stop and start.

    Stopping the shared cluster would break the other tests; this one belongs to one test.
    """

    directory: Path
    port: int
    url: str = ""

    def _script(self, command: str) -> str:
        env = {**os.environ, "OPENEXEC_PG_DIR": str(self.directory), "OPENEXEC_PG_PORT": str(self.port)}
        completed = subprocess.run(
            ["bash", str(REPO / ".ci" / "postgres.sh"), command],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(f".ci/postgres.sh {command} failed: {completed.stderr.strip()[-500:]}")
        return completed.stdout

    def _pg_ctl(self, *args: str) -> None:
        binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
        pg_ctl = str(binaries[-1] / "pg_ctl")
        command = [pg_ctl, "-D", str(self.directory / "data"), *args]
        if os.geteuid() == 0:  # the cluster belongs to the postgres user (initdb refuses root)
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, capture_output=True, timeout=120, check=True)

    def create(self) -> str:
        self.url = self._script("start").strip().splitlines()[-1]
        return self.url

    def stop_server(self) -> None:
        """Stop PostgreSQL (fast shutdown: sessions are cut, as in an outage)."""
        self._pg_ctl("-m", "fast", "-w", "stop")

    def start_server(self) -> None:
        """Start it again on the same data and port."""
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg_ctl("-l", str(self.directory / "log"), "-w", "-t", "60", "-o", options, "start")

    def destroy(self) -> None:
        self._script("stop")
