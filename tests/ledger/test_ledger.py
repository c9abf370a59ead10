"""The ledger service over a real store: store-backed tree, checkpoints, proofs, batching (SPEC §7).

The hypothesis tests run on SQLite files (a fresh one per example, ``synchronous=normal`` so that
hundreds of appends stay fast); ``test_store_contract.py`` runs the tree itself on both backends.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oe_testing.receipts import KEY, body_of, receipt_factory

from openexec_mcp.core.tlog.checkpoint import verify_checkpoint
from openexec_mcp.core.tlog.merkle import root_from_leaves, verify_consistency, verify_inclusion
from openexec_mcp.core.tlog.proof import verify_inclusion_proof
from openexec_mcp.errors import VerificationError
from openexec_mcp.gate.pipeline import CallContext
from openexec_mcp.ledger.checkpoints import Ledger
from openexec_mcp.runtime import Runtime
from openexec_mcp.store import open_store
from openexec_mcp.store.base import LedgerEntry, Store

ORIGIN = "ledger-test"
PUBLIC = KEY.public_key()


@contextmanager
def fresh_store() -> Iterator[tuple[Store, Path]]:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "ledger.db"
        store = open_store(f"sqlite:///{path}", sqlite_synchronous="normal")
        try:
            yield store, path
        finally:
            store.close()


def append(store: Store, count: int) -> list[LedgerEntry]:
    return [store.append(receipt_factory(), tenant_id="tenant-a", run_id="run-1", action="echo") for _ in range(count)]


def leaves_of(store: Store) -> list[bytes]:
    return [bytes.fromhex(entry.receipt_hash) for entry in store.iter_entries()]


@settings(max_examples=30, deadline=None)
@given(size=st.integers(min_value=1, max_value=70))
def test_inclusion_proofs_from_the_store_verify_for_every_index(size: int) -> None:
    with fresh_store() as (store, _):
        append(store, size)
        ledger = Ledger(store, KEY, ORIGIN)
        leaves = leaves_of(store)
        root = root_from_leaves(leaves)
        assert store.tree_root(size) == root
        for index in range(size):
            verify_inclusion(leaves[index], index, size, ledger.inclusion_proof(index, size), root)


@settings(max_examples=20, deadline=None)
@given(batches=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=6))
def test_checkpoints_kept_across_appends_are_each_consistent_with_the_newest(batches: list[int]) -> None:
    with fresh_store() as (store, _):
        ledger = Ledger(store, KEY, ORIGIN)
        kept = []
        for count in batches:
            append(store, count)
            kept.append(verify_checkpoint(ledger.checkpoint().note, ORIGIN, PUBLIC))
        newest = kept[-1]
        assert newest.size == sum(batches)
        assert newest.root == root_from_leaves(leaves_of(store))
        for old in kept:
            answer = ledger.consistency(old.size, newest.size)
            verify_consistency(old.size, newest.size, answer.proof, old.root, newest.root)


def test_a_checkpoint_covers_every_committed_receipt_and_is_reused_until_the_ledger_grows() -> None:
    with fresh_store() as (store, _):
        ledger = Ledger(store, KEY, ORIGIN)
        empty = ledger.checkpoint()
        assert verify_checkpoint(empty.note, ORIGIN, PUBLIC).size == 0
        append(store, 5)
        first = ledger.checkpoint()
        assert (first.size, ledger.checkpoint()) == (5, first)
        assert store.latest_checkpoint() == first
        append(store, 1)
        assert ledger.checkpoint().size == 6


def test_the_server_refuses_to_sign_a_size_below_its_latest_checkpoint() -> None:
    with fresh_store() as (store, _):
        ledger = Ledger(store, KEY, ORIGIN)
        append(store, 8)
        latest = ledger.sign_checkpoint(8)
        with pytest.raises(ValueError, match="refusing to sign size 5"):
            ledger.sign_checkpoint(5)
        assert ledger.sign_checkpoint(8) == latest
        assert store.latest_checkpoint() == latest


def test_a_tampered_tree_is_never_signed_over_the_latest_checkpoint() -> None:
    import sqlite3

    with fresh_store() as (store, path):
        ledger = Ledger(store, KEY, ORIGIN)
        append(store, 8)
        signed = ledger.checkpoint()
        db = sqlite3.connect(path)
        db.execute("DROP TRIGGER merkle_nodes_no_update")
        db.execute("UPDATE merkle_nodes SET hash = zeroblob(32) WHERE level = 3 AND idx = 0")
        db.commit()
        db.close()
        append(store, 1)
        with pytest.raises(VerificationError) as raised:
            ledger.checkpoint()
        assert raised.value.reason == "inconsistent_checkpoint"
        assert store.latest_checkpoint() == signed


def test_proof_text_is_a_tlog_proof_that_verifies_offline() -> None:
    with fresh_store() as (store, _):
        entries = append(store, 13)
        ledger = Ledger(store, KEY, ORIGIN)
        for entry in entries:
            text = ledger.proof_text(entry)
            checkpoint = verify_inclusion_proof(
                text, bytes.fromhex(entry.receipt_hash), ORIGIN, PUBLIC, index=entry.seq
            )
            assert checkpoint.size == 13


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (5, 4, "no consistency proof"),
        (-1, 4, "no consistency proof"),
        (3, 9, "not inside"),
        (0, 9, "smaller"),
        (9, 9, "smaller"),
    ],
)
def test_consistency_refuses_sizes_outside_the_ledger(old: int, new: int, message: str) -> None:
    with fresh_store() as (store, _):
        append(store, 8)
        with pytest.raises(ValueError, match=message):
            Ledger(store, KEY, ORIGIN).consistency(old, new)


def test_consistency_from_the_empty_tree_or_to_the_same_size_is_an_empty_proof() -> None:
    with fresh_store() as (store, _):
        append(store, 8)
        ledger = Ledger(store, KEY, ORIGIN)
        assert ledger.consistency(0, 8).proof == []
        assert ledger.consistency(8, 8).proof == []
        fresh = ledger.consistency(3)
        assert fresh.checkpoint is not None and (fresh.new_size, fresh.checkpoint.size) == (8, 8)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_batch_checkpoints_follow_the_count_and_the_interval() -> None:
    with fresh_store() as (store, _):
        clock = FakeClock()
        ledger = Ledger(store, KEY, ORIGIN, checkpoint_every=4, checkpoint_interval_seconds=60, monotonic=clock)
        try:
            for entry in append(store, 3):
                ledger.note_appended(entry)
            ledger.flush()
            assert store.latest_checkpoint() is None  # 3 appends, 0 seconds: not yet
            ledger.note_appended(append(store, 1)[0])
            ledger.flush()
            latest = store.latest_checkpoint()
            assert latest is not None and latest.size == 4
            ledger.note_appended(append(store, 1)[0])
            ledger.flush()
            assert store.latest_checkpoint() == latest
            clock.now += 61  # a quiet minute: the next append is enough
            ledger.note_appended(append(store, 1)[0])
            ledger.flush()
            latest = store.latest_checkpoint()
            assert latest is not None and latest.size == 6
        finally:
            ledger.close()


def test_a_failing_batch_checkpoint_is_logged_and_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    with fresh_store() as (store, _):
        ledger = Ledger(store, KEY, ORIGIN, checkpoint_every=1)
        entry = append(store, 1)[0]
        store.close()  # the next checkpoint fails: the store is gone
        ledger.note_appended(entry)
        ledger.close()
        assert "batch checkpoint failed" in caplog.text


# -- wiring: the gate reports every append -------------------------------------------------------


def calls(runtime: Runtime, *items: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        ctx = CallContext(tenant_id=runtime.settings.tenant_id, run_id="ledger-test")
        return [(await runtime.gate.call(name, arguments, ctx)).envelope for name, arguments in items]

    return anyio.run(run)


def test_the_gate_reports_every_appended_receipt_to_the_ledger(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime()
    assert runtime.gate.on_append == runtime.ledger.note_appended
    seen: list[int] = []
    runtime.gate.on_append = lambda entry: seen.append(entry.seq)
    made = calls(
        runtime,
        ("echo", {"nonce": "ledger-n-1"}),
        ("echo", {"nonce": "ledger-n-1"}),
        ("echo", {"x": 1, "nonce": "ledger-n-1"}),
        ("boom", {"nonce": "ledger-n-2"}),
    )
    assert [envelope["status"] for envelope in made] == ["executed", "replayed", "denied", "failed"]
    assert seen == [0, 1, 2, 3]


def test_a_failing_append_observer_never_fails_the_call(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime()

    def broken(entry: LedgerEntry) -> None:
        raise RuntimeError("observer bug")

    runtime.gate.on_append = broken
    (envelope,) = calls(runtime, ("echo", {"nonce": "ledger-n-3"}))
    assert envelope["status"] == "executed"


def test_the_gate_records_the_action_request_with_the_nonce(make_runtime: Callable[..., Runtime]) -> None:
    from openexec_mcp.core.canonical import sha256_hex

    runtime = make_runtime()
    (envelope,) = calls(runtime, ("echo", {"msg": "héllo", "nonce": "ledger-n-4"}))
    request = runtime.store.get_action_request(runtime.settings.tenant_id, "ledger-n-4")
    assert request == '{"action":"echo","nonce":"ledger-n-4","payload":{"msg":"héllo"}}'
    body = body_of(envelope)
    assert sha256_hex(request.encode()) == body["action_hash"]
