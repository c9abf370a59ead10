"""The store contract of store/base.py (SPEC §4 nonces, §5 inbox, §7 ledger), run against every backend.

The PostgreSQL runs need ``OPENEXEC_TEST_POSTGRES_URL`` (``python3 dev.py test`` starts a cluster);
without it they are skipped, except under ``CI=true`` where they fail. Each test gets its own
PostgreSQL schema, dropped afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, LiteralString, cast

import pytest
from oe_testing.receipts import HASH_A, KEY, receipt_factory

from openexec_mcp.core.nonce import NonceRecord
from openexec_mcp.core.receipt import SignedReceipt, receipt_hash, verify_receipt
from openexec_mcp.errors import StoreUnavailableError
from openexec_mcp.store import open_store
from openexec_mcp.store.base import (
    APPROVAL_CONSUMED,
    ApprovalRequest,
    LedgerEntry,
    NonceClaim,
    Outcome,
    ReceiptFactory,
    Store,
    StoredCheckpoint,
)

# Read at import: the autouse clean_environment fixture removes OPENEXEC_* before every test.
POSTGRES_URL = os.environ.get("OPENEXEC_TEST_POSTGRES_URL", "")
IN_CI = os.environ.get("CI", "").lower() == "true"
NO_POSTGRES = (
    "PostgreSQL not available: set OPENEXEC_TEST_POSTGRES_URL "
    "(python3 dev.py test starts a cluster when PostgreSQL binaries are installed)"
)

PUBLIC_KEYS = {KEY.kid: KEY.public_key()}
HASH_B = "b" * 64


# -- helpers ------------------------------------------------------------------------------------


def indeterminate_factory(record: NonceRecord) -> ReceiptFactory:
    return receipt_factory(
        exec_id=record.exec_id,
        status="indeterminate",
        tenant_id=record.tenant_id,
        run_id=record.run_id,
        action=record.action,
        nonce=record.nonce,
        action_hash=record.action_hash,
    )


def make_claim(
    nonce: str = "nonce-1", *, tenant_id: str = "tenant-a", action_hash: str = HASH_A, approval_id: str | None = None
) -> NonceClaim:
    return NonceClaim(
        tenant_id=tenant_id,
        nonce=nonce,
        action="echo",
        action_hash=action_hash,
        exec_id=secrets.token_hex(16),
        run_id="run-1",
        approval='{"method":"auto"}',
        started_at="2025-01-01T00:00:00.000Z",
        approval_id=approval_id,
    )


def executed(result: str = '{"ok":true}') -> Outcome:
    return Outcome("executed", result, "c" * 64, None, None, "2025-01-01T00:00:01.000Z")


def make_request(
    action_hash: str = HASH_A,
    *,
    tenant_id: str = "tenant-a",
    created_at: str = "2025-01-01T00:00:00.000Z",
    expires_unix: float = 2000.0,
) -> ApprovalRequest:
    return ApprovalRequest(
        request_id=secrets.token_hex(16),
        tenant_id=tenant_id,
        action_hash=action_hash,
        action_request='{"action":"echo"}',
        created_at=created_at,
        expires_at="2025-01-01T00:10:00.000Z",
        expires_unix=expires_unix,
    )


def assert_linear(entries: list[LedgerEntry]) -> None:
    """seq is 0..n-1, every receipt verifies, and each prev is the previous receipt_hash."""
    prev: str | None = None
    for index, entry in enumerate(entries):
        envelope = json.loads(entry.envelope)
        body = verify_receipt(envelope, PUBLIC_KEYS)
        assert (entry.seq, body["seq"], body["prev"]) == (index, index, prev)
        assert entry.receipt_hash == receipt_hash(envelope)
        assert body["exec_id"] == entry.exec_id
        prev = entry.receipt_hash


def run_together(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` for i in range(count) on ``count`` threads released at once; re-raise failures."""
    barrier = threading.Barrier(count, timeout=60)

    def start(index: int) -> Any:
        barrier.wait()
        return work(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(start, index) for index in range(count)]
        return [future.result() for future in futures]


# -- backends -----------------------------------------------------------------------------------


@dataclass
class Backend:
    """One fresh database of one backend: open stores on it, or run SQL behind the store's back."""

    kind: str
    url: str
    execute: Callable[[LiteralString], None]
    opened: list[Store] = field(default_factory=list[Store])

    def open(self) -> Store:
        store = open_store(self.url)
        self.opened.append(store)
        return store


def postgres_url() -> str:
    if not POSTGRES_URL:
        if IN_CI:
            pytest.fail(f"{NO_POSTGRES}; CI=true requires the PostgreSQL tests to run")
        pytest.skip(NO_POSTGRES)
    return POSTGRES_URL


@pytest.fixture
def postgres_schema_url() -> Iterator[str]:
    """A URL on a fresh, empty schema of the test database (search_path in the URL options)."""
    import psycopg
    from psycopg import sql

    base = postgres_url()
    schema = f"oe_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    separator = "&" if "?" in base else "?"
    yield f"{base}{separator}options=-csearch_path%3D{schema}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def sqlite_backend(path: Path) -> Backend:
    def execute(sql: LiteralString) -> None:
        db = sqlite3.connect(path)
        try:
            db.execute(sql)
            db.commit()
        finally:
            db.close()

    return Backend("sqlite", f"sqlite:///{path}", execute)


def postgres_backend(url: str) -> Backend:
    import psycopg

    def execute(sql: LiteralString) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql)

    return Backend("postgresql", url, execute)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        made = sqlite_backend(tmp_path / "state" / "store.db")
    else:
        made = postgres_backend(request.getfixturevalue("postgres_schema_url"))
    yield made
    for store in made.opened:
        store.close()


@pytest.fixture
def pg_backend(postgres_schema_url: str) -> Iterator[Backend]:
    """PostgreSQL only: behaviours that exist only with several replicas or a network."""
    made = postgres_backend(postgres_schema_url)
    yield made
    for store in made.opened:
        store.close()


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.open()


# -- nonces (SPEC §4) ---------------------------------------------------------------------------


def test_first_claim_owns_the_nonce_and_a_second_gets_its_record(store: Store) -> None:
    first = make_claim()
    assert store.get_nonce("tenant-a", "nonce-1") is None
    assert store.claim_nonce(first) is None
    again = store.claim_nonce(make_claim(action_hash=HASH_B))
    assert isinstance(again, NonceRecord)
    assert (again.exec_id, again.action_hash, again.state) == (first.exec_id, HASH_A, "started")
    assert store.get_nonce("tenant-a", "nonce-1") == again
    assert store.ledger_size() == 0


def test_a_nonce_is_claimed_per_tenant(store: Store) -> None:
    assert store.claim_nonce(make_claim(tenant_id="tenant-a")) is None
    assert store.claim_nonce(make_claim(tenant_id="tenant-b")) is None


def test_an_approval_id_executes_once_and_the_refused_claim_writes_nothing(store: Store) -> None:
    assert store.claim_nonce(make_claim("nonce-1", approval_id="approval-1")) is None
    assert store.claim_nonce(make_claim("nonce-2", approval_id="approval-1")) is APPROVAL_CONSUMED
    assert store.get_nonce("tenant-a", "nonce-2") is None
    # Nothing was consumed for nonce-2, so a corrected retry with a fresh approval goes through.
    assert store.claim_nonce(make_claim("nonce-2", approval_id="approval-2")) is None


def test_a_retried_call_gets_its_record_not_approval_consumed(store: Store) -> None:
    first = make_claim(approval_id="approval-1")
    assert store.claim_nonce(first) is None
    again = store.claim_nonce(make_claim(approval_id="approval-1"))
    assert isinstance(again, NonceRecord) and again.exec_id == first.exec_id


def test_fifty_threads_claiming_one_nonce_make_exactly_one_owner(store: Store) -> None:
    claims = [make_claim() for _ in range(50)]
    answers = run_together(50, lambda index: store.claim_nonce(claims[index]))
    owners = [claim for claim, answer in zip(claims, answers, strict=True) if answer is None]
    assert len(owners) == 1
    assert all(isinstance(a, NonceRecord) and a.exec_id == owners[0].exec_id for a in answers if a is not None)


def test_fifty_threads_spending_one_approval_make_exactly_one_claim(store: Store) -> None:
    answers = run_together(50, lambda index: store.claim_nonce(make_claim(f"nonce-{index}", approval_id="approval-1")))
    assert sum(answer is None for answer in answers) == 1
    assert sum(answer is APPROVAL_CONSUMED for answer in answers) == 49
    assert sum(store.get_nonce("tenant-a", f"nonce-{index}") is not None for index in range(50)) == 1


def test_finish_records_the_outcome_and_its_receipt_together(store: Store) -> None:
    claim = make_claim()
    store.claim_nonce(claim)
    entry = store.finish("tenant-a", "nonce-1", executed(), receipt_factory(exec_id=claim.exec_id, status="executed"))
    assert (entry.seq, entry.exec_id, entry.status, entry.run_id, entry.action) == (
        0,
        claim.exec_id,
        "executed",
        "run-1",
        "echo",
    )
    record = store.get_nonce("tenant-a", "nonce-1")
    assert record is not None
    assert (record.state, record.status, record.result, record.result_hash) == (
        "finished",
        "executed",
        '{"ok":true}',
        "c" * 64,
    )
    assert store.get_entry(claim.exec_id) == entry
    assert_linear(list(store.iter_entries()))


def test_finish_of_an_unclaimed_or_finished_nonce_raises_and_appends_nothing(store: Store) -> None:
    with pytest.raises(StoreUnavailableError) as raised:
        store.finish("tenant-a", "never-claimed", executed(), receipt_factory())
    assert raised.value.code == "store_unavailable"
    store.claim_nonce(make_claim())
    store.finish("tenant-a", "nonce-1", executed(), receipt_factory())
    with pytest.raises(StoreUnavailableError):
        store.finish("tenant-a", "nonce-1", executed(), receipt_factory())
    assert store.ledger_size() == 1


def test_finish_keeps_the_claim_started_when_the_receipt_cannot_be_built(store: Store) -> None:
    store.claim_nonce(make_claim())

    def broken(seq: int, prev: str | None) -> SignedReceipt:
        raise ValueError("signing failed")

    with pytest.raises(ValueError, match="signing failed"):
        store.finish("tenant-a", "nonce-1", executed(), broken)
    record = store.get_nonce("tenant-a", "nonce-1")
    assert record is not None and (record.state, record.status) == ("started", None)
    assert store.ledger_size() == 0


def test_recover_started_records_cut_off_calls_as_indeterminate_once(backend: Backend) -> None:
    crashed = backend.open()
    cut_off, done = make_claim("nonce-1"), make_claim("nonce-2")
    crashed.claim_nonce(cut_off)
    crashed.claim_nonce(done)
    crashed.finish("tenant-a", "nonce-2", executed(), receipt_factory(exec_id=done.exec_id, status="executed"))
    crashed.close()  # the process dies with nonce-1 'started'

    restarted = backend.open()
    recovered = restarted.recover_started(indeterminate_factory)
    assert [(e.exec_id, e.status, e.seq) for e in recovered] == [(cut_off.exec_id, "indeterminate", 1)]
    record = restarted.get_nonce("tenant-a", "nonce-1")
    assert record is not None and record.state == "indeterminate"
    assert restarted.recover_started(indeterminate_factory) == []
    assert_linear(list(restarted.iter_entries()))


# -- approval inbox (SPEC §5) -------------------------------------------------------------------


def test_open_approval_request_returns_the_one_pending_for_the_same_call(store: Store) -> None:
    first = make_request()
    assert store.open_approval_request(first, now_unix=1000.0) == first
    assert store.open_approval_request(make_request(), now_unix=1000.0) == first
    other_tenant = make_request(tenant_id="tenant-b")
    assert store.open_approval_request(other_tenant, now_unix=1000.0) == other_tenant
    assert store.get_approval_request(first.request_id) == first
    assert store.get_approval_request("unknown") is None


def test_approval_requests_are_listed_oldest_first_and_expired_ones_dropped(store: Store) -> None:
    late = make_request(HASH_B, created_at="2025-01-01T00:00:02.000Z")
    early = make_request(HASH_A, created_at="2025-01-01T00:00:01.000Z")
    stale = make_request("d" * 64, expires_unix=1500.0)
    other = make_request("e" * 64, tenant_id="tenant-b", created_at="2025-01-01T00:00:03.000Z")
    for request in (late, early, stale, other):
        store.open_approval_request(request, now_unix=1000.0)
    assert store.list_approval_requests(1000.0) == [stale, early, late, other]
    assert store.list_approval_requests(1600.0) == [early, late, other]
    assert store.list_approval_requests(1600.0, "tenant-b") == [other]
    # An expired request is replaced by a new one for the same call.
    renewed = make_request("d" * 64)
    assert store.open_approval_request(renewed, now_unix=1600.0) == renewed


def test_claiming_the_nonce_closes_the_pending_request_of_the_call(store: Store) -> None:
    pending = make_request(HASH_A)
    store.open_approval_request(pending, now_unix=1000.0)
    assert store.claim_nonce(make_claim(action_hash=HASH_A)) is None
    assert store.get_approval_request(pending.request_id) is None


def test_approval_artifacts_are_stored_once_and_read_newest_first(store: Store) -> None:
    assert store.add_approval_artifact(HASH_A, "approval-1", '{"n":1}', "2025-01-01T00:00:01.000Z") is True
    assert store.add_approval_artifact(HASH_A, "approval-1", '{"n":9}', "2025-01-01T00:00:09.000Z") is False
    for n in range(2, 20):
        store.add_approval_artifact(HASH_A, f"approval-{n}", f'{{"n":{n}}}', f"2025-01-01T00:00:{n:02d}.000Z")
    artifacts = store.approval_artifacts(HASH_A)
    assert artifacts == [f'{{"n":{n}}}' for n in range(19, 3, -1)]
    assert store.approval_artifacts(HASH_B) == []


# -- ledger (SPEC §7) ---------------------------------------------------------------------------


def test_sixteen_artifacts_of_another_tenant_cannot_hide_a_tenants_approval(store: Store) -> None:
    """Issue 9: the inbox look-up filters by (tenant, action_hash) in SQL, before its limit."""
    mine = json.dumps({"approval_id": "ap-a", "tenant_id": "tenant-a", "action_hash": HASH_A})
    store.add_approval_artifact(HASH_A, "ap-a", mine, "2025-01-01T00:00:00.000Z")
    for index in range(16):
        theirs = json.dumps({"approval_id": f"ap-b{index}", "tenant_id": "tenant-b", "action_hash": HASH_A})
        store.add_approval_artifact(HASH_A, f"ap-b{index}", theirs, f"2025-01-01T00:00:{index + 1:02d}.000Z")
    assert store.approval_artifacts(HASH_A, "tenant-a") == [mine]
    assert len(store.approval_artifacts(HASH_A, "tenant-b")) == 16
    assert store.approval_artifacts(HASH_A, "tenant-c") == []


def test_a_tenant_keeps_at_most_max_pending_requests_and_others_are_untouched(store: Store) -> None:
    """Issue 9: one tenant's flood of approval requests closes its own oldest, never another's."""
    other = store.open_approval_request(make_request("f" * 64, tenant_id="tenant-b"), 1000.0, 3)
    for index in range(10):
        created = f"2025-01-01T00:00:{index:02d}.000Z"
        store.open_approval_request(make_request(f"{index:064x}", created_at=created), 1000.0, 3)
    pending = store.list_approval_requests(1000.0, "tenant-a")
    assert [r.action_hash for r in pending] == [f"{index:064x}" for index in (7, 8, 9)]
    assert store.list_approval_requests(1000.0, "tenant-b") == [other]


def test_approval_requests_are_read_in_pages_with_a_keyset_cursor(store: Store) -> None:
    made = [
        store.open_approval_request(make_request(f"{i:064x}", created_at=f"2025-01-01T00:00:{i:02d}.000Z"), 1000.0)
        for i in range(5)
    ]
    first = store.list_approval_requests(1000.0, limit=2)
    assert first == made[:2]
    rest = store.list_approval_requests(1000.0, after=(first[-1].created_at, first[-1].request_id), limit=10)
    assert rest == made[2:]


def test_runs_are_scoped_by_tenant(store: Store) -> None:
    """Issue 9: two tenants sharing a run_id: each entry says its tenant, and one tenant's run can be read alone."""
    store.append(receipt_factory(), tenant_id="tenant-a", run_id="shared", action="echo")
    store.append(receipt_factory(), tenant_id="tenant-b", run_id="shared", action="echo")
    store.append(receipt_factory(), tenant_id="tenant-a", run_id="other", action="echo")
    assert [e.tenant_id for e in store.iter_entries(run_id="shared")] == ["tenant-a", "tenant-b"]
    assert [e.seq for e in store.iter_entries(run_id="shared", tenant_id="tenant-b")] == [1]
    assert [e.seq for e in store.iter_entries(tenant_id="tenant-a")] == [0, 2]


def test_appends_are_gap_free_and_each_prev_is_the_previous_receipt_hash(store: Store) -> None:
    entries = [store.append(receipt_factory(), tenant_id="tenant-a", run_id="run-1", action="echo") for _ in range(5)]
    assert [entry.seq for entry in entries] == [0, 1, 2, 3, 4]
    assert_linear(entries)
    assert list(store.iter_entries()) == entries
    assert store.ledger_size() == 5


def test_iter_entries_reads_past_one_page_and_filters_by_run(store: Store) -> None:
    runs = ["run-b" if seq % 3 == 0 else "run-a" for seq in range(1205)]
    for run_id in runs:
        store.append(receipt_factory(run_id=run_id), tenant_id="tenant-a", run_id=run_id, action="echo")
    everything = list(store.iter_entries())
    assert len(everything) == 1205
    assert_linear(everything)
    assert [entry.seq for entry in store.iter_entries(1100)] == list(range(1100, 1205))
    only_b = list(store.iter_entries(run_id="run-b"))
    assert [entry.seq for entry in only_b] == list(range(0, 1205, 3))
    assert all(entry.run_id == "run-b" for entry in only_b)
    assert [entry.seq for entry in store.iter_entries(1190, run_id="run-b")] == [1191, 1194, 1197, 1200, 1203]
    assert list(store.iter_entries(1205)) == []


def test_entries_are_found_by_exec_id_and_by_seq(store: Store) -> None:
    entries = [store.append(receipt_factory(), tenant_id="tenant-a", run_id="run-1", action="echo") for _ in range(3)]
    assert store.get_entry(entries[1].exec_id) == entries[1]
    assert store.get_entry_at(2) == entries[2]
    assert store.get_entry("unknown") is None
    assert store.get_entry_at(3) is None


@pytest.mark.parametrize("statement", ["UPDATE ledger SET status = 'executed'", "DELETE FROM ledger"])
def test_the_database_itself_refuses_to_rewrite_the_ledger(backend: Backend, statement: LiteralString) -> None:
    store = backend.open()
    entry = store.append(receipt_factory(), tenant_id="tenant-a", run_id="run-1", action="echo")
    with pytest.raises(Exception, match="append-only"):
        backend.execute(statement)
    assert store.get_entry_at(0) == entry


def test_eight_threads_appending_keep_the_chain_linear(store: Store) -> None:
    def fifty(_: int) -> None:
        for _ in range(50):
            store.append(receipt_factory(), tenant_id="tenant-a", run_id="run-1", action="echo")

    run_together(8, fifty)
    entries = list(store.iter_entries())
    assert len(entries) == 400
    assert_linear(entries)


def test_two_replicas_appending_at_once_keep_one_linear_chain(backend: Backend) -> None:
    replicas = [backend.open(), backend.open()]

    def forty(index: int) -> None:
        for _ in range(40):
            replicas[index % 2].append(receipt_factory(), tenant_id="tenant-a", run_id="run-1", action="echo")

    run_together(6, forty)
    entries = list(replicas[0].iter_entries())
    assert len(entries) == 240
    assert_linear(entries)
    assert replicas[1].ledger_size() == 240


def test_replicas_opening_one_fresh_database_at_once_all_succeed(
    backend: Backend, request: pytest.FixtureRequest
) -> None:
    opened = run_together(6, lambda _: backend.open())
    for store in opened:
        store.ping()
    opened[0].append(receipt_factory(), tenant_id="tenant-a", run_id="run-1", action="echo")
    assert opened[5].ledger_size() == 1


# -- PostgreSQL only: replicas, liveness and outages ------------------------------------------


def test_truncating_the_ledger_is_refused_too(pg_backend: Backend) -> None:
    pg_backend.open().append(receipt_factory(), tenant_id="tenant-a", run_id="run-1", action="echo")
    with pytest.raises(Exception, match="append-only"):
        pg_backend.execute("TRUNCATE ledger")


def test_open_store_accepts_the_postgres_scheme_too(pg_backend: Backend) -> None:
    store = open_store(pg_backend.url.replace("postgresql://", "postgres://", 1))
    try:
        assert store.kind == "postgresql"
        store.ping()
    finally:
        store.close()


def test_recover_started_leaves_the_calls_of_a_live_replica_alone(pg_backend: Backend) -> None:
    running, starting = pg_backend.open(), pg_backend.open()
    claim = make_claim()
    running.claim_nonce(claim)
    assert starting.recover_started(indeterminate_factory) == []
    entry = running.finish("tenant-a", "nonce-1", executed(), receipt_factory(exec_id=claim.exec_id))
    assert entry.seq == 0

    running.claim_nonce(make_claim("nonce-2"))
    running.close()  # this replica dies with nonce-2 'started'
    recovered = starting.recover_started(indeterminate_factory)
    assert [(e.status, e.seq) for e in recovered] == [("indeterminate", 1)]


def test_a_replica_takes_its_liveness_lock_again_after_losing_its_session(pg_backend: Backend) -> None:
    import psycopg

    from openexec_mcp.store.postgres import PostgresStore

    replica = cast(PostgresStore, pg_backend.open())
    before = make_claim("nonce-1")
    replica.claim_nonce(before)
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (f"openexec-mcp replica {replica.owner}",),
        )
        # Granted only once the terminated session is gone: a wait without a sleep.
        admin.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (replica.owner,))
        admin.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (replica.owner,))

    # The documented window: while its liveness session is down, a starting replica recovers its calls.
    starting = pg_backend.open()
    assert [e.exec_id for e in starting.recover_started(indeterminate_factory)] == [before.exec_id]
    with pytest.raises(StoreUnavailableError):
        replica.finish("tenant-a", "nonce-1", executed(), receipt_factory(exec_id=before.exec_id))

    # The next claim notices, takes the lock again, and its calls are safe from recovery once more.
    after = make_claim("nonce-2")
    assert replica.claim_nonce(after) is None
    assert starting.recover_started(indeterminate_factory) == []
    entry = replica.finish("tenant-a", "nonce-2", executed(), receipt_factory(exec_id=after.exec_id))
    assert entry.seq == 1
    assert_linear(list(replica.iter_entries()))


def test_a_server_restart_is_invisible_to_the_next_calls(pg_backend: Backend) -> None:
    import psycopg

    from openexec_mcp.store.postgres import PostgresStore

    store = cast(PostgresStore, pg_backend.open())
    store.append(receipt_factory(), tenant_id="tenant-a", run_id="run-1", action="echo")
    # Several idle pooled connections, all about to go stale at once (white-box: the pool is private).
    held = [store._pool.getconn() for _ in range(3)]  # pyright: ignore[reportPrivateUsage]
    for conn in held:
        store._pool.putconn(conn)  # pyright: ignore[reportPrivateUsage]
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity WHERE application_name IN (%s, %s)",
            ("openexec-mcp", f"openexec-mcp replica {store.owner}"),
        ).fetchone()
    assert killed is not None and killed[0] >= 4

    store.ping()
    assert store.append(receipt_factory(), tenant_id="tenant-a", run_id="run-1", action="echo").seq == 1
    assert store.claim_nonce(make_claim()) is None
    assert pg_backend.open().recover_started(indeterminate_factory) == []


def test_a_malformed_postgres_url_is_a_config_error_that_hides_the_password() -> None:
    from openexec_mcp.errors import ConfigError

    with pytest.raises(ConfigError) as raised:
        open_store("postgresql://openexec:s3cret-pw@[::1/openexec")
    assert "s3cret-pw" not in str(raised.value)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_postgres_is_store_unavailable_and_the_password_is_not_echoed() -> None:
    from openexec_mcp.store.postgres import PostgresStore

    url = f"postgresql://openexec:s3cret-pw@127.0.0.1:{free_port()}/openexec"
    with pytest.raises(StoreUnavailableError) as raised:
        open_store(url)
    assert raised.value.code == "store_unavailable"
    assert "s3cret-pw" not in str(raised.value)
    with pytest.raises(StoreUnavailableError):
        PostgresStore(url, connect_timeout_seconds=2)


class TcpProxy:
    """Forwards a local port to the PostgreSQL server: stop() is an outage, start() the recovery."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stopping = False

    def start(self) -> None:
        self._stopping = False
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self.port = int(self._listener.getsockname()[1])
        self._spawn(self._accept, self._listener)

    def stop(self) -> None:
        """Close the port and cut every forwarded connection, as a crashed server would."""
        if self._listener is None:
            return
        self._stopping = True
        socket.create_connection(("127.0.0.1", self.port)).close()  # wakes accept()
        self._threads[0].join()
        self._listener.close()
        for sock in self._sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join()
        for sock in self._sockets:
            sock.close()
        self._sockets, self._threads, self._listener = [], [], None

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            client, _ = listener.accept()
            if self._stopping:
                client.close()
                return
            upstream = socket.create_connection(self.upstream)
            self._sockets += [client, upstream]
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def test_the_store_fails_fast_during_an_outage_and_recovers_by_itself(postgres_schema_url: str) -> None:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from openexec_mcp.store.postgres import PostgresStore

    params = conninfo_to_dict(postgres_schema_url)
    host = str(params.get("host", "localhost"))
    if host.startswith("/"):
        pytest.skip("the outage test needs PostgreSQL over TCP")
    proxy = TcpProxy((host, int(str(params.get("port") or 5432))))
    proxy.start()
    store = PostgresStore(make_conninfo(postgres_schema_url, host="127.0.0.1", port=str(proxy.port)))
    try:
        store.append(receipt_factory(), tenant_id="tenant-a", run_id="run-1", action="echo")
        proxy.stop()
        with pytest.raises(StoreUnavailableError) as raised:
            store.ping()
        assert raised.value.code == "store_unavailable"
        with pytest.raises(StoreUnavailableError):
            store.append(receipt_factory(), tenant_id="tenant-a", run_id="run-1", action="echo")
        with pytest.raises(StoreUnavailableError):
            store.claim_nonce(make_claim())
        proxy.start()
        store.ping()
        assert store.append(receipt_factory(), tenant_id="tenant-a", run_id="run-1", action="echo").seq == 1
        assert store.claim_nonce(make_claim()) is None
        assert_linear(list(store.iter_entries()))
    finally:
        store.close()
        proxy.stop()


# -- retention and operator decisions (SPEC §4) -------------------------------------------------

OLD = "2025-01-01T00:00:01.000Z"  # finished_at of executed()
HORIZON = "2025-06-01T00:00:00.000Z"


def crashed_with_indeterminate(backend: Backend, nonce: str = "nonce-1") -> tuple[Store, NonceClaim]:
    """A store reopened after a crash that cut ``nonce`` off: its record is ``indeterminate``."""
    crashed = backend.open()
    claim = make_claim(nonce)
    crashed.claim_nonce(claim)
    crashed.close()
    restarted = backend.open()
    restarted.recover_started(indeterminate_factory)
    return restarted, claim


def test_prune_removes_old_finished_records_but_never_started_ones_nor_receipts(store: Store) -> None:
    for nonce in ("nonce-old-1", "nonce-old-2"):
        store.claim_nonce(make_claim(nonce))
        store.finish("tenant-a", nonce, executed(), receipt_factory(status="executed"))
    store.claim_nonce(make_claim("nonce-running"))  # started long ago, still running: never pruned
    store.claim_nonce(make_claim("nonce-recent"))
    recent = Outcome("executed", "{}", "c" * 64, None, None, "2025-07-01T00:00:00.000Z")
    store.finish("tenant-a", "nonce-recent", recent, receipt_factory(status="executed"))

    assert store.prune_nonces(HORIZON) == 2
    assert store.get_nonce("tenant-a", "nonce-old-1") is None
    assert store.get_nonce("tenant-a", "nonce-old-2") is None
    running = store.get_nonce("tenant-a", "nonce-running")
    assert running is not None and running.state == "started"
    assert store.get_nonce("tenant-a", "nonce-recent") is not None
    assert store.ledger_size() == 3
    assert_linear(list(store.iter_entries()))
    # A pruned nonce is free again: records are kept for the retention period, not longer.
    assert store.claim_nonce(make_claim("nonce-old-1")) is None
    assert store.prune_nonces(HORIZON) == 0


def test_prune_keeps_a_consumed_approval_until_its_artifact_expired_whatever_happens_to_its_nonce(
    store: Store,
) -> None:
    expired = replace(
        make_claim("nonce-old", approval_id="approval-old"), approval_keep_until="2025-01-01T00:06:00.000Z"
    )
    # issued_at within the skew in the future: its artifact outlives the nonce record's retention.
    future = replace(
        make_claim("nonce-future", approval_id="approval-future"), approval_keep_until="2025-06-01T00:06:00.000Z"
    )
    for claim in (expired, future):
        store.claim_nonce(claim)
        store.finish("tenant-a", claim.nonce, executed(), receipt_factory(status="executed"))
    store.claim_nonce(make_claim("nonce-live", approval_id="approval-live"))  # still running
    store.add_approval_artifact(HASH_A, "approval-old", '{"old":1}', "2025-01-01T00:00:00.000Z")
    store.add_approval_artifact(HASH_A, "approval-new", '{"new":1}', "2025-07-01T00:00:00.000Z")

    assert store.prune_nonces(HORIZON) == 2
    assert store.get_nonce("tenant-a", "nonce-future") is None
    # The live call's approval and the future one stay consumed; only the expired one is forgotten.
    assert store.claim_nonce(make_claim("nonce-x", approval_id="approval-live")) is APPROVAL_CONSUMED
    assert store.claim_nonce(make_claim("nonce-z", approval_id="approval-future")) is APPROVAL_CONSUMED
    assert store.claim_nonce(make_claim("nonce-y", approval_id="approval-old")) is None
    assert store.approval_artifacts(HASH_A) == ['{"new":1}']


def test_prune_works_through_more_records_than_one_batch(store: Store) -> None:
    for index in range(1203):
        nonce = f"nonce-{index:05d}"
        store.claim_nonce(make_claim(nonce))
        store.finish("tenant-a", nonce, executed(), receipt_factory(status="executed"))
    assert store.prune_nonces(HORIZON) == 1203
    assert store.get_nonce("tenant-a", "nonce-01202") is None
    assert store.ledger_size() == 1203


FAR_FUTURE = "9999-01-01T00:00:00.000Z"  # a horizon every record is older than


def test_retention_never_prunes_an_indeterminate_record_so_ledger_resolve_still_finds_it(backend: Backend) -> None:
    store, claim = crashed_with_indeterminate(backend)  # recovered after a crash
    store.claim_nonce(make_claim("nonce-sent"))  # sent, no answer: indeterminate through finish()
    lost = Outcome("indeterminate", None, None, "outcome_unknown", "no answer", OLD)
    store.finish("tenant-a", "nonce-sent", lost, receipt_factory(status="indeterminate"))
    running = make_claim("nonce-running")
    store.claim_nonce(running)

    assert store.prune_nonces(FAR_FUTURE) == 0
    record = store.get_nonce_by_exec_id(claim.exec_id)  # what `ledger resolve EXEC_ID` looks up
    assert record is not None and record.state == "indeterminate"
    sent = store.get_nonce("tenant-a", "nonce-sent")
    assert sent is not None and sent.state == "indeterminate"
    kept = store.get_nonce_by_exec_id(running.exec_id)
    assert kept is not None and kept.state == "started"
    # Its nonce stays taken: a retry is answered from the record, never run again.
    assert isinstance(store.claim_nonce(make_claim("nonce-1")), NonceRecord)

    # Once an operator decides it, it is finished and ages like any finished call.
    decision = secrets.token_hex(16)
    verdict = Outcome("failed", None, None, "operator_marked_failed", "marked failed", "2026-01-01T00:00:00.000Z")
    assert store.fail_indeterminate(
        "tenant-a", "nonce-1", claim.exec_id, decision, verdict, receipt_factory(exec_id=decision, status="failed")
    )
    assert store.prune_nonces("2025-12-31T00:00:00.000Z") == 0  # decided after this horizon
    assert store.prune_nonces(FAR_FUTURE) == 1
    assert store.get_nonce("tenant-a", "nonce-1") is None
    assert store.get_nonce("tenant-a", "nonce-sent") is not None
    assert store.get_nonce("tenant-a", "nonce-running") is not None
    assert store.ledger_size() == 3


def test_get_nonce_by_exec_id_finds_the_record_of_a_call(store: Store) -> None:
    claim = make_claim()
    store.claim_nonce(claim)
    record = store.get_nonce_by_exec_id(claim.exec_id)
    assert record is not None and (record.tenant_id, record.nonce, record.state) == ("tenant-a", "nonce-1", "started")
    assert store.get_nonce_by_exec_id("0" * 32) is None


def test_fail_indeterminate_records_the_verdict_once_with_its_receipt(backend: Backend) -> None:
    store, claim = crashed_with_indeterminate(backend)
    verdict = Outcome("failed", None, None, "operator_marked_failed", "marked failed", "2026-01-01T00:00:00.000Z")
    decision = secrets.token_hex(16)
    entry = store.fail_indeterminate(
        "tenant-a", "nonce-1", claim.exec_id, decision, verdict, receipt_factory(exec_id=decision, status="failed")
    )
    assert entry is not None and (entry.seq, entry.exec_id, entry.status) == (1, decision, "failed")
    record = store.get_nonce("tenant-a", "nonce-1")
    assert record is not None
    assert (record.state, record.status, record.error_code, record.exec_id) == (
        "finished",
        "failed",
        "operator_marked_failed",
        decision,
    )
    # Decided once: a second verdict on the same call, or on a call that is not indeterminate, writes nothing.
    again = secrets.token_hex(16)
    assert store.fail_indeterminate("tenant-a", "nonce-1", claim.exec_id, again, verdict, receipt_factory()) is None
    assert store.fail_indeterminate("tenant-a", "nonce-1", decision, again, verdict, receipt_factory()) is None
    assert store.ledger_size() == 2
    assert_linear(list(store.iter_entries()))


def test_reclaim_indeterminate_is_won_by_exactly_one_of_fifty_operators(backend: Backend) -> None:
    store, claim = crashed_with_indeterminate(backend)
    reruns = [secrets.token_hex(16) for _ in range(50)]
    won = run_together(50, lambda i: store.reclaim_indeterminate("tenant-a", "nonce-1", claim.exec_id, reruns[i], OLD))
    assert won.count(True) == 1
    winner = reruns[won.index(True)]
    record = store.get_nonce("tenant-a", "nonce-1")
    assert record is not None and (record.state, record.exec_id) == ("started", winner)
    # The re-run then finishes as any claimed call, and is replayed from then on.
    entry = store.finish("tenant-a", "nonce-1", executed(), receipt_factory(exec_id=winner, status="executed"))
    assert (entry.seq, entry.exec_id) == (1, winner)
    assert store.reclaim_indeterminate("tenant-a", "nonce-1", winner, secrets.token_hex(16), OLD) is False
    assert_linear(list(store.iter_entries()))


def test_a_re_run_cut_off_by_a_crash_is_indeterminate_again(backend: Backend) -> None:
    store, claim = crashed_with_indeterminate(backend)
    rerun = secrets.token_hex(16)
    assert store.reclaim_indeterminate("tenant-a", "nonce-1", claim.exec_id, rerun, "2026-01-01T00:00:00.000Z")
    store.close()  # the operator's process dies during the re-run
    restarted = backend.open()
    recovered = restarted.recover_started(indeterminate_factory)
    assert [(e.exec_id, e.status) for e in recovered] == [(rerun, "indeterminate")]
    record = restarted.get_nonce("tenant-a", "nonce-1")
    assert record is not None and (record.state, record.exec_id) == ("indeterminate", rerun)


# -- Merkle tree, checkpoints and recorded requests (SPEC §7) ------------------------------------


def append_receipts(store: Store, count: int) -> list[bytes]:
    """Append ``count`` receipts; return their leaf hashes (the receipt_hash bytes)."""
    return [
        bytes.fromhex(store.append(receipt_factory(), tenant_id="tenant-a", run_id="run-1", action="echo").receipt_hash)
        for _ in range(count)
    ]


def query_one(backend: Backend, sql: LiteralString) -> Any:
    """Run one query behind the store's back and return the first column of its first row."""
    if backend.kind == "sqlite":
        db = sqlite3.connect(backend.url.removeprefix("sqlite:///"))
        try:
            return db.execute(sql).fetchone()[0]
        finally:
            db.close()
    import psycopg

    with psycopg.connect(backend.url, autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
        assert row is not None
        return row[0]


def drop_tree_guards(backend: Backend) -> None:
    """Let the test delete tree nodes, as an old version's database (or an intruder) would lack them."""
    if backend.kind == "sqlite":
        backend.execute("DROP TRIGGER merkle_nodes_no_delete")
    else:
        backend.execute("DROP TRIGGER merkle_nodes_append_only ON merkle_nodes")


def test_the_tree_root_of_every_size_is_the_rfc_9162_root_of_the_receipt_hashes(store: Store) -> None:
    from openexec_mcp.core.tlog.merkle import EMPTY_ROOT, root_from_leaves

    leaves = append_receipts(store, 37)
    assert store.tree_root(0) == EMPTY_ROOT
    assert [store.tree_root(size) for size in range(38)] == [root_from_leaves(leaves[:size]) for size in range(38)]


def test_the_stored_tree_serves_every_inclusion_and_consistency_proof(store: Store) -> None:
    from openexec_mcp.core.tlog.merkle import (
        consistency_proof,
        inclusion_proof,
        root_from_leaves,
        verify_consistency,
        verify_inclusion,
    )

    leaves = append_receipts(store, 21)
    roots = [root_from_leaves(leaves[:size]) for size in range(22)]

    def hasher(start: int, end: int) -> bytes:
        return store.subtree_hashes([(start, end)])[0]

    for size in range(1, 22):
        for index in range(size):
            verify_inclusion(leaves[index], index, size, inclusion_proof(index, size, hasher), roots[size])
        for old in range(1, size + 1):
            verify_consistency(old, size, consistency_proof(old, size, hasher), roots[old], roots[size])


def test_subtree_hashes_answer_many_ranges_at_once_and_refuse_ranges_past_the_ledger(store: Store) -> None:
    from openexec_mcp.core.tlog.merkle import root_from_leaves

    leaves = append_receipts(store, 10)
    ranges = [(0, 8), (8, 10), (4, 6), (9, 10), (0, 10)]
    assert store.subtree_hashes(ranges) == [root_from_leaves(leaves[a:b]) for a, b in ranges]
    for bad in ([(0, 11)], [(5, 5)], [(-1, 2)]):
        with pytest.raises(ValueError, match="not inside"):
            store.subtree_hashes(bad)
    with pytest.raises(ValueError):
        store.tree_root(11)


def test_each_append_stores_only_the_nodes_it_completes(backend: Backend) -> None:
    store = backend.open()
    for size in (1, 2, 3, 8, 13, 64, 100):
        append_receipts(store, size - store.ledger_size())
        # The perfect subtrees above the leaves: sum of size >> level = size - popcount(size).
        assert query_one(backend, "SELECT COUNT(*) FROM merkle_nodes") == size - size.bit_count()


def test_an_older_database_gets_its_tree_and_request_column_when_opened(backend: Backend) -> None:
    from openexec_mcp.core.tlog.merkle import root_from_leaves

    store = backend.open()
    leaves = append_receipts(store, 45)
    store.close()
    drop_tree_guards(backend)
    backend.execute("DELETE FROM merkle_nodes")
    backend.execute("ALTER TABLE nonces DROP COLUMN request")
    backend.execute("DROP TABLE schema_version")  # releases before versioning had none

    reopened = backend.open()
    assert query_one(backend, "SELECT COUNT(*) FROM merkle_nodes") == 45 - (45).bit_count()
    assert reopened.tree_root(45) == root_from_leaves(leaves)
    assert reopened.claim_nonce(replace(make_claim(), request='{"action":"echo"}')) is None
    assert reopened.get_action_request("tenant-a", "nonce-1") == '{"action":"echo"}'
    leaves += append_receipts(reopened, 3)
    assert reopened.tree_root(48) == root_from_leaves(leaves)


def test_nodes_lost_behind_an_open_store_are_rebuilt_when_needed(backend: Backend) -> None:
    from openexec_mcp.core.tlog.merkle import root_from_leaves

    store = backend.open()
    leaves = append_receipts(store, 15)
    drop_tree_guards(backend)
    backend.execute("DELETE FROM merkle_nodes WHERE level >= 2")
    # The next append needs lost siblings (16 completes levels 1 to 4): it rebuilds them first.
    leaves += append_receipts(store, 1)
    assert store.tree_root(16) == root_from_leaves(leaves)
    backend.execute("DELETE FROM merkle_nodes WHERE level = 3 OR (level = 1 AND idx < 4)")
    assert store.tree_root(13) == root_from_leaves(leaves[:13])
    assert query_one(backend, "SELECT COUNT(*) FROM merkle_nodes") == 16 - 1


def test_two_replicas_appending_at_once_keep_one_tree(backend: Backend) -> None:
    from openexec_mcp.core.tlog.merkle import root_from_leaves

    replicas = [backend.open(), backend.open()]
    run_together(4, lambda index: append_receipts(replicas[index % 2], 30))
    leaves = [bytes.fromhex(entry.receipt_hash) for entry in replicas[0].iter_entries()]
    assert len(leaves) == 120
    assert replicas[1].tree_root(120) == replicas[0].tree_root(120) == root_from_leaves(leaves)
    assert query_one(backend, "SELECT COUNT(*) FROM merkle_nodes") == 120 - (120).bit_count()


def checkpoint_at(size: int, tag: str = "a") -> StoredCheckpoint:
    return StoredCheckpoint(size, f"{size:02x}{tag}".ljust(64, "0")[:64], f"note {size} {tag}\n")


def test_save_checkpoint_only_moves_forward(store: Store) -> None:
    assert store.latest_checkpoint() is None
    five = checkpoint_at(5)
    assert store.save_checkpoint(five) == five
    assert store.save_checkpoint(checkpoint_at(3)) == five
    assert store.save_checkpoint(checkpoint_at(5, "b")) == five  # the same size is never replaced
    assert store.latest_checkpoint() == five
    nine = checkpoint_at(9)
    assert store.save_checkpoint(nine) == nine
    assert store.latest_checkpoint() == nine


def test_replicas_saving_checkpoints_at_once_keep_the_largest(backend: Backend) -> None:
    replicas = [backend.open(), backend.open()]
    sizes = list(range(1, 41))
    secrets.SystemRandom().shuffle(sizes)
    answers = run_together(
        8, lambda index: [replicas[index % 2].save_checkpoint(checkpoint_at(s)) for s in sizes[index::8]]
    )
    assert replicas[0].latest_checkpoint() == checkpoint_at(40)
    # Whatever the interleaving, every answer is a checkpoint at least as large as the one offered.
    for index, saved in enumerate(answers):
        assert all(answer.size >= offered for answer, offered in zip(saved, sizes[index::8], strict=True))


@pytest.mark.parametrize("table", ["merkle_nodes", "checkpoints"])
def test_the_database_refuses_to_rewrite_tree_nodes_and_checkpoints(backend: Backend, table: str) -> None:
    store = backend.open()
    append_receipts(store, 2)
    store.save_checkpoint(checkpoint_at(2))
    statements: dict[str, list[LiteralString]] = {
        "merkle_nodes": ["UPDATE merkle_nodes SET idx = 7", "DELETE FROM merkle_nodes"],
        "checkpoints": ["UPDATE checkpoints SET size = 7", "DELETE FROM checkpoints"],
    }
    for statement in statements[table]:
        with pytest.raises(Exception, match="append-only"):
            backend.execute(statement)
    assert store.latest_checkpoint() == checkpoint_at(2)


def test_the_action_request_is_kept_with_its_nonce(store: Store) -> None:
    request = '{"action":"echo","nonce":"nonce-1","payload":{"msg":"hi"}}'
    base = make_claim()
    assert store.claim_nonce(replace(base, request=request)) is None
    assert store.get_action_request("tenant-a", "nonce-1") == request
    assert store.claim_nonce(make_claim("nonce-2")) is None
    assert store.get_action_request("tenant-a", "nonce-2") is None
    assert store.get_action_request("tenant-a", "unknown") is None


# -- grants (SPEC §13) ------------------------------------------------------------------------------


def make_grant(grant_id: str = "gr-1", *, max_uses: int = 2, tenant_id: str = "tenant-a") -> Any:
    from openexec_mcp.store.grants import StoredGrant

    return StoredGrant(
        grant_id=grant_id,
        tenant_id=tenant_id,
        artifact=json.dumps({"grant_id": grant_id}),
        max_uses=max_uses,
        uses=0,
        expires_at="2999-01-01T00:00:00.000Z",
        keep_until="2999-01-01T00:00:00.000Z",
        submitted_at="2025-01-01T00:00:00.000Z",
        revoked_at=None,
    )


def test_grant_use_is_consumed_with_the_nonce_claim_and_numbered(store: Store) -> None:
    from openexec_mcp.store.grants import GrantRefused

    assert store.add_grant(make_grant(max_uses=2)) and not store.add_grant(make_grant(max_uses=2))
    approval = '{"method":"grant","approval_id":"gr-1","use":null}'
    first = store.claim_nonce_with_grant(replace(make_claim("n-1"), approval=approval), "gr-1")
    second = store.claim_nonce_with_grant(replace(make_claim("n-2"), approval=approval), "gr-1")
    assert (first, second) == (1, 2)
    record = store.get_nonce("tenant-a", "n-2")
    assert record is not None and json.loads(record.approval)["use"] == 2
    third = store.claim_nonce_with_grant(replace(make_claim("n-3"), approval=approval), "gr-1")
    assert third == GrantRefused("exhausted")
    assert store.get_nonce("tenant-a", "n-3") is None  # nothing written
    # A nonce already claimed answers its record and consumes no use.
    again = store.claim_nonce_with_grant(replace(make_claim("n-1"), approval=approval), "gr-1")
    assert isinstance(again, NonceRecord)


def test_revoked_or_other_tenants_grant_is_refused_and_writes_nothing(store: Store) -> None:
    from openexec_mcp.store.grants import GrantRefused

    store.add_grant(make_grant("gr-r", max_uses=5))
    assert store.revoke_grant("gr-r", "tenant-b", "2025-01-01T00:00:00.000Z") is None  # not theirs
    revoked = store.revoke_grant("gr-r", "tenant-a", "2025-01-01T00:00:00.000Z")
    assert revoked is not None and revoked.revoked_at is not None
    assert store.claim_nonce_with_grant(make_claim("n-r"), "gr-r") == GrantRefused("revoked")
    assert store.get_nonce("tenant-a", "n-r") is None
    assert store.claim_nonce_with_grant(make_claim("n-b", tenant_id="tenant-b"), "gr-r") == GrantRefused("revoked")
    assert [g.grant_id for g in store.grants_for("tenant-a", "2025-06-01T00:00:00.000Z")] == ["gr-r"]
    assert store.grants_for("tenant-b", "2025-06-01T00:00:00.000Z") == []


def test_racing_claims_on_a_one_use_grant_win_exactly_once(backend: Backend) -> None:
    stores = [backend.open() for _ in range(2)]
    stores[0].add_grant(make_grant("gr-race", max_uses=1))
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda i: stores[i % 2].claim_nonce_with_grant(make_claim(f"n-{i}"), "gr-race"), range(8))
        )
    assert sorted(str(r) for r in results).count("1") == 1
