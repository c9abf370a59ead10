"""Group commit (issue 13): one writer thread per store, concurrent writes share one transaction.

Real SQLite files (and PostgreSQL when ``OPENEXEC_TEST_POSTGRES_URL`` is set). The store's
writer commits every operation queued while the previous batch was committing in one
transaction, each in its own savepoint: these tests show that concurrent claims, outcomes and
appends are grouped, that each caller gets its own answer, that a failing operation rolls back
only itself, that the ledger stays gap-free and linear, and that a claim and its outcome can be
one transaction (``claim_and_finish``, for ``read_only`` actions).
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from oe_testing.postgres import fresh_schema
from oe_testing.receipts import receipt_factory
from test_store_contract import assert_linear, executed, make_claim

from openexec_mcp.core.nonce import NonceRecord
from openexec_mcp.errors import StoreUnavailableError
from openexec_mcp.store import open_store
from openexec_mcp.store.base import LedgerEntry, Store

POSTGRES_URL = os.environ.get("OPENEXEC_TEST_POSTGRES_URL", "")
CALLERS = 32


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        opened = open_store("sqlite:///" + str(tmp_path / "group.db"))
        yield opened
        opened.close()
        return
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL not available: set OPENEXEC_TEST_POSTGRES_URL")
    with fresh_schema(POSTGRES_URL) as url:
        opened = open_store(url)
        yield opened
        opened.close()


def together(count: int, work: Any) -> list[Any]:
    """Run ``work(i)`` on ``count`` threads released at once; return results (or the exceptions raised)."""
    barrier = threading.Barrier(count, timeout=60)

    def start(index: int) -> Any:
        barrier.wait()
        try:
            return work(index)
        except Exception as exc:  # each caller's own answer
            return exc

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(start, range(count)))


def writer_counts(store: Store) -> tuple[int, int]:
    writer = store._writer  # type: ignore[attr-defined]  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
    return int(writer.batches), int(writer.operations)  # pyright: ignore[reportUnknownArgumentType, reportUnknownMemberType]


def test_concurrent_claims_and_outcomes_share_commits_and_keep_one_linear_ledger(store: Store) -> None:
    batches_before, ops_before = writer_counts(store)

    def call(index: int) -> LedgerEntry:
        claim = make_claim(f"group-{index:04d}")
        assert store.claim_nonce(claim) is None
        factory = receipt_factory(exec_id=claim.exec_id, status="executed", nonce=claim.nonce)
        return store.finish(claim.tenant_id, claim.nonce, executed(), factory)

    entries = together(CALLERS, call)
    assert all(isinstance(entry, LedgerEntry) for entry in entries)
    batches, ops = writer_counts(store)
    assert ops - ops_before == 2 * CALLERS  # every claim and outcome went through the writer
    assert batches - batches_before <= ops - ops_before  # never more commits than operations
    assert_linear(list(store.iter_entries()))
    assert sorted(entry.seq for entry in entries) == list(range(CALLERS))


def test_one_failing_operation_in_a_group_rolls_back_only_itself(store: Store) -> None:
    def call(index: int) -> Any:
        if index % 4 == 0:  # an outcome for a nonce nobody claimed: refused, nothing written
            factory = receipt_factory(status="executed", nonce=f"never-{index:04d}")
            return store.finish("tenant-a", f"never-{index:04d}", executed(), factory)
        return store.append(receipt_factory(nonce=f"ok-{index:04d}"), tenant_id="tenant-a", run_id="r", action="echo")

    answers = together(CALLERS, call)
    failures = [answer for index, answer in enumerate(answers) if index % 4 == 0]
    successes = [answer for index, answer in enumerate(answers) if index % 4 != 0]
    assert all(isinstance(answer, StoreUnavailableError) for answer in failures)
    assert all(isinstance(answer, LedgerEntry) for answer in successes)
    entries = list(store.iter_entries())
    assert len(entries) == len(successes)  # the failed ones left no receipt, and no gap
    assert_linear(entries)


def test_the_same_nonce_claimed_in_one_group_is_claimed_once(store: Store) -> None:
    nonce = "same-" + secrets.token_hex(8)
    answers = together(CALLERS, lambda _index: store.claim_nonce(make_claim(nonce)))
    assert sum(answer is None for answer in answers) == 1
    assert all(
        isinstance(answer, NonceRecord) and answer.state == "started" for answer in answers if answer is not None
    )


def test_claim_and_finish_is_one_transaction_and_answers_a_used_nonce_with_its_record(store: Store) -> None:
    claim = make_claim("read-once")
    factory = receipt_factory(exec_id=claim.exec_id, status="executed", nonce=claim.nonce)
    entry = store.claim_and_finish(claim, executed(), factory)
    assert isinstance(entry, LedgerEntry) and entry.seq == 0
    record = store.get_nonce(claim.tenant_id, claim.nonce)
    assert record is not None and record.state == "finished" and record.exec_id == claim.exec_id
    again = make_claim("read-once")
    answer = store.claim_and_finish(again, executed(), receipt_factory(exec_id=again.exec_id, nonce=again.nonce))
    assert isinstance(answer, NonceRecord) and answer.exec_id == claim.exec_id  # nothing written
    assert [e.seq for e in store.iter_entries()] == [0]


def test_claim_and_finish_refuses_to_consume_an_approval(store: Store) -> None:
    claim = make_claim("with-approval", approval_id="approval-1")
    with pytest.raises(ValueError, match="consumes no approval"):
        store.claim_and_finish(claim, executed(), receipt_factory(exec_id=claim.exec_id))
    assert store.get_nonce(claim.tenant_id, claim.nonce) is None


def test_a_write_after_close_is_refused_as_unavailable(tmp_path: Path) -> None:
    store = open_store("sqlite:///" + str(tmp_path / "closed.db"))
    store.close()
    with pytest.raises(StoreUnavailableError):
        store.append(receipt_factory(), tenant_id="tenant-a", run_id="r", action="echo")


def test_operations_queued_while_a_batch_runs_commit_together_in_one_transaction(store: Store) -> None:
    running, release = threading.Event(), threading.Event()
    blocker = store.submit(lambda: running.set() or release.wait(30))
    assert blocker is not None and running.wait(30)
    batches_before, _ = writer_counts(store)

    def append(index: int) -> LedgerEntry:
        return store.append(
            receipt_factory(nonce=f"queued-{index:04d}"), tenant_id="tenant-a", run_id="r", action="echo"
        )

    futures = [store.submit(lambda index=index: append(index)) for index in range(10)]
    release.set()
    assert blocker.result(timeout=30) is True
    entries = [future.result(timeout=30) for future in futures if future is not None]
    assert [entry.seq for entry in entries] == list(range(10))  # in queue order
    assert writer_counts(store)[0] - batches_before == 2  # the blocker's batch, then one for all ten
    assert_linear(list(store.iter_entries()))
