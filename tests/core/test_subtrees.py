"""Stored perfect subtrees (core/subtrees.py): what an append writes, what a proof reads, the migration."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openexec_mcp.core.tlog.merkle import (
    EMPTY_ROOT,
    consistency_proof,
    inclusion_proof,
    root_from_leaves,
)
from openexec_mcp.core.tlog.subtrees import (
    Position,
    append_nodes,
    append_sibling_positions,
    backfill,
    range_hash,
    range_positions,
    ranges_positions,
)


def leaves(n: int) -> list[bytes]:
    return [hashlib.sha256(b"leaf %d" % i).digest() for i in range(n)]


def grow(data: list[bytes]) -> dict[Position, bytes]:
    """Append leaf by leaf as a store does; return every stored position (level 0 included)."""
    stored: dict[Position, bytes] = {}
    for seq, leaf in enumerate(data):
        needed = append_sibling_positions(seq)
        siblings = {position: stored[position] for position in needed}
        for level, idx, value in append_nodes(seq, leaf, data[seq - 1] if seq else None, siblings):
            stored[(level, idx)] = value
        stored[(0, seq)] = leaf
    return stored


@settings(max_examples=60, deadline=None)
@given(n=st.integers(min_value=0, max_value=300))
def test_appends_store_exactly_every_perfect_subtree(n: int) -> None:
    data = leaves(n)
    stored = grow(data)
    expected = {
        (level, idx): root_from_leaves(data[idx << level : (idx + 1) << level])
        for level in range(n.bit_length() + 1)
        for idx in range(n >> level)
    }
    assert stored == expected
    assert sum(1 for level, _ in stored if level > 0) == n - n.bit_count()


def test_an_append_reads_at_most_log_n_stored_nodes_and_usually_none() -> None:
    reads = [len(append_sibling_positions(seq)) for seq in range(4096)]
    assert max(reads) == 11  # completing the 4096-leaf subtree: levels 2..12 need their left halves
    assert sum(reads) < 4096 / 2  # amortised: half a read per append


@settings(max_examples=100, deadline=None)
@given(n=st.integers(min_value=1, max_value=600), data=st.data())
def test_every_range_a_proof_asks_for_is_read_from_few_positions(n: int, data: st.DataObject) -> None:
    stored = grow(leaves(n))
    asked: list[tuple[int, int]] = []

    def hasher(start: int, end: int) -> bytes:
        asked.append((start, end))
        return range_hash(start, end, stored)

    index = data.draw(st.integers(min_value=0, max_value=n - 1))
    old = data.draw(st.integers(min_value=1, max_value=n))
    inclusion_proof(index, n, hasher)
    consistency_proof(old, n, hasher)
    asked.append((0, n))
    for start, end in asked:
        assert range_hash(start, end, stored) == root_from_leaves(leaves(n)[start:end])
        assert len(range_positions(start, end)) <= 2 * (end - start).bit_length()


def test_arbitrary_ranges_are_still_exact() -> None:
    data = leaves(23)
    stored = grow(data)
    for start in range(23):
        for end in range(start + 1, 24):
            assert range_hash(start, end, stored) == root_from_leaves(data[start:end])
    assert range_hash(0, 0, stored) == EMPTY_ROOT
    with pytest.raises(ValueError):
        ranges_positions([(3, 24)], 23)
    with pytest.raises(KeyError):
        range_hash(0, 24, stored)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(min_value=0, max_value=500), keep=st.integers(min_value=0, max_value=500), data=st.data())
def test_backfill_completes_any_prefix_of_the_tree(n: int, keep: int, data: st.DataObject) -> None:
    values = leaves(n)
    full = grow(values)
    # What an older database holds: the leaves, and perhaps the nodes of a shorter ledger, with holes.
    stored = grow(values[: min(keep, n)])
    holes = data.draw(st.lists(st.sampled_from(sorted(stored)), max_size=5)) if stored else []
    for position in holes:
        if position[0] > 0:
            stored.pop(position, None)
    stored.update(((0, i), v) for i, v in enumerate(values))

    def stored_count(level: int) -> int:
        count = 0
        while (level, count) in stored:
            count += 1
        return count

    def read_level(level: int, lo: int, hi: int) -> list[bytes]:
        return [stored[(level, i)] for i in range(lo, hi) if (level, i) in stored]

    def write_level(level: int, lo: int, hashes: Iterable[bytes]) -> None:
        for offset, value in enumerate(hashes):
            stored.setdefault((level, lo + offset), value)

    backfill(n, stored_count, read_level, write_level, chunk=7)
    assert stored == full
