"""The versioned schema (issue 10): ``schema_version`` records what a database has; the runner adds the rest.

Real SQLite files and, when ``OPENEXEC_TEST_POSTGRES_URL`` is set, a fresh PostgreSQL schema.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, LiteralString

import pytest
from oe_testing.postgres import fresh_schema, require_postgres

from openexec_mcp.errors import ConfigError
from openexec_mcp.store import open_store
from openexec_mcp.store.schema import LATEST, MIGRATIONS

Query = Callable[[LiteralString], list[tuple[Any, ...]]]


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Query]]:
    """A URL and a way to run SQL behind the store's back."""
    if request.param == "sqlite":
        path = tmp_path / "schema.db"

        def run_sqlite(sql: LiteralString) -> list[tuple[Any, ...]]:
            with sqlite3.connect(path) as db:
                return db.execute(sql).fetchall()

        yield f"sqlite:///{path}", run_sqlite
        return
    import psycopg

    with fresh_schema(require_postgres()) as url:

        def run_postgres(sql: LiteralString) -> list[tuple[Any, ...]]:
            with psycopg.connect(url, autocommit=True) as conn:
                cursor = conn.execute(sql)
                return cursor.fetchall() if cursor.description else []

        yield url, run_postgres


def test_a_new_database_records_every_schema_version_once(database: tuple[str, Query]) -> None:
    url, run = database
    open_store(url).close()
    open_store(url).close()
    assert run("SELECT version FROM schema_version ORDER BY version") == [(m.version,) for m in MIGRATIONS]


def test_a_database_at_an_older_version_gets_the_later_versions_columns(database: tuple[str, Query]) -> None:
    url, run = database
    open_store(url).close()
    run("DROP INDEX approval_artifacts_tenant")
    run("DROP INDEX consumed_approvals_keep_until")
    run("ALTER TABLE approval_artifacts DROP COLUMN tenant_id")
    run("ALTER TABLE consumed_approvals DROP COLUMN keep_until")
    run("DELETE FROM schema_version WHERE version >= 2")  # a database at version 1

    store = open_store(url)
    try:
        assert store.add_approval_artifact("a" * 64, "ap-1", '{"tenant_id":"t"}', "2025-01-01T00:00:00.000Z")
        assert store.approval_artifacts("a" * 64, "t") == ['{"tenant_id":"t"}']
    finally:
        store.close()
    assert run("SELECT MAX(version) FROM schema_version") == [(LATEST,)]


def test_a_database_of_a_newer_version_is_refused(database: tuple[str, Query]) -> None:
    url, run = database
    open_store(url).close()
    run("INSERT INTO schema_version (version, description, applied_at) VALUES (99, 'future', 'x')")
    with pytest.raises(ConfigError, match="version 99"):
        open_store(url)
