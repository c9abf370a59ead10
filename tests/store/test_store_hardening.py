"""Issue 9 on the store: database files private to their owner, outage messages that leak nothing.

Real files and a real (unreachable) PostgreSQL address; no mocks.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from oe_testing.postgres import fresh_schema, require_postgres
from oe_testing.receipts import receipt_factory

from openexec_mcp.errors import StoreUnavailableError
from openexec_mcp.store import open_store


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The usual umask 022, under which files are created 0644."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_sqlite_files_in_an_existing_shared_state_dir_are_created_owner_only(
    tmp_path: Path, open_umask: None, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    with caplog.at_level(logging.WARNING, logger="openexec_mcp.store.sqlite"):
        store = open_store(f"sqlite:///{state / 'openexec.db'}")
    try:
        store.append(receipt_factory(), tenant_id="tenant-a", run_id="run-1", action="echo")
        files = sorted(path.name for path in state.iterdir())
        assert files == ["openexec.db", "openexec.db-shm", "openexec.db-wal"]
        assert {name: mode(state / name) for name in files} == dict.fromkeys(files, 0o600)
    finally:
        store.close()
    assert any("accessible to other users" in record.getMessage() for record in caplog.records)


def test_an_existing_world_readable_database_is_made_owner_only(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "openexec.db"
    open_store(f"sqlite:///{path}").close()
    path.chmod(0o644)
    store = open_store(f"sqlite:///{path}")
    try:
        assert mode(path) == 0o600
    finally:
        store.close()


def test_an_unopenable_sqlite_database_says_only_that_the_store_is_unavailable(tmp_path: Path) -> None:
    directory = tmp_path / "secret-place" / "openexec.db"
    directory.mkdir(parents=True)  # a directory where the file should be
    with pytest.raises(StoreUnavailableError) as raised:
        open_store(f"sqlite:///{directory}")
    assert raised.value.message == "the store is unavailable"
    assert "secret-place" not in str(raised.value)


def test_a_postgres_outage_tells_clients_nothing_of_host_port_or_driver(caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("psycopg_pool")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    with caplog.at_level(logging.WARNING, logger="openexec_mcp.store"), pytest.raises(StoreUnavailableError) as raised:
        open_store(f"postgresql://openexec:s3cret-pw@127.0.0.1:{port}/openexec")
    assert raised.value.to_dict() == {"code": "store_unavailable", "message": "the store is unavailable"}
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert str(port) in logged  # the operator still learns what failed
    assert "s3cret-pw" not in logged


def test_a_running_postgres_store_cut_off_mid_service_says_only_that_the_store_is_unavailable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("psycopg_pool")
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    from test_store_contract import TcpProxy  # pyright: ignore[reportMissingImports, reportUnknownVariableType]

    from openexec_mcp.store.postgres import PostgresStore

    with fresh_schema(require_postgres()) as url:
        params = conninfo_to_dict(url)
        host = str(params.get("host", "localhost"))
        if host.startswith("/"):
            pytest.skip("needs PostgreSQL over TCP")
        proxy = TcpProxy((host, int(str(params.get("port") or 5432))))  # pyright: ignore[reportUnknownVariableType]
        proxy.start()  # pyright: ignore[reportUnknownMemberType]
        port = str(proxy.port)  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]
        store = PostgresStore(make_conninfo(url, host="127.0.0.1", port=port))
        try:
            store.append(receipt_factory(), tenant_id="tenant-a", run_id="run-1", action="echo")
            proxy.stop()  # pyright: ignore[reportUnknownMemberType]
            for attempt in (store.ping, store.ledger_size):
                level = caplog.at_level(logging.WARNING, logger="openexec_mcp.store")
                with level, pytest.raises(StoreUnavailableError) as raised:
                    attempt()
                assert raised.value.to_dict() == {"code": "store_unavailable", "message": "the store is unavailable"}
            assert port in " ".join(record.getMessage() for record in caplog.records)
        finally:
            store.close()
            proxy.stop()  # pyright: ignore[reportUnknownMemberType]
