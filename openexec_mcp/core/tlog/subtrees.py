"""Stored perfect subtrees: how a store keeps the RFC 9162 tree incrementally (SPEC §7).

A store keeps, besides its leaves (the receipt_hash of each ``seq``), the hash of every *perfect*
subtree as soon as it is complete: the node at **position** ``(level, idx)`` is ``MTH`` of the
``2**level`` leaves ``[idx << level, (idx + 1) << level)``. Level 0 is the leaves themselves;
levels ``>= 1`` are stored nodes. An append completes one node per trailing set bit of the old
size (amortised one, at most ``log2 n``), and the hash of any subtree that occurs in an
RFC 9162 proof or root, ``MTH(D[start:end])``, is assembled from ``O(log n)`` positions.

Everything here is pure: a store reads the positions named by these functions, in one query,
and passes them back as a mapping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final

from openexec_mcp.core.tlog.merkle import EMPTY_ROOT, node_hash

__all__ = [
    "BACKFILL_CHUNK",
    "Position",
    "append_nodes",
    "append_sibling_positions",
    "backfill",
    "range_hash",
    "range_positions",
    "ranges_positions",
]

Position = tuple[int, int]
"""``(level, idx)``: the perfect subtree of ``2**level`` leaves starting at leaf ``idx << level``."""

BACKFILL_CHUNK: Final = 1 << 15
"""Nodes computed per read/write round trip when a store fills missing levels (32,768)."""


def _completed(seq: int) -> list[Position]:
    # Appending leaf seq completes the node at level l iff the new size is a multiple of 2**l.
    size = seq + 1
    positions: list[Position] = []
    level = 1
    while size % (1 << level) == 0:
        positions.append((level, (size >> level) - 1))
        level += 1
    return positions


def append_sibling_positions(seq: int) -> list[Position]:
    """Return the stored positions (level >= 1) an append of leaf ``seq`` must read.

    These are the left siblings of the nodes the append completes, above the leaf level (the
    left sibling at level 0 is leaf ``seq - 1``, i.e. the receipt's ``prev``). Usually empty.
    """
    return [(level - 1, idx * 2) for level, idx in _completed(seq) if level >= 2]


def append_nodes(
    seq: int, leaf: bytes, prev_leaf: bytes | None, siblings: Mapping[Position, bytes]
) -> list[tuple[int, int, bytes]]:
    """Return the nodes completed by appending leaf ``seq``, lowest first.

    Args:
        seq: The new leaf's index.
        leaf: The new leaf hash (32 bytes).
        prev_leaf: Leaf ``seq - 1`` (32 bytes), or ``None`` when ``seq`` is 0.
        siblings: The hashes at :func:`append_sibling_positions` of ``seq``.

    Returns:
        ``(level, idx, hash)`` for each completed node; empty when ``seq`` is even.

    Raises:
        KeyError: A needed sibling is missing from ``siblings``.
        ValueError: ``prev_leaf`` is missing for an odd ``seq``.
    """
    completed = _completed(seq)
    if completed and prev_leaf is None:
        raise ValueError(f"leaf {seq} completes a node but its left sibling is missing")
    nodes: list[tuple[int, int, bytes]] = []
    right = leaf
    for level, idx in completed:
        left = prev_leaf if level == 1 else siblings[(level - 1, idx * 2)]
        assert left is not None  # checked above; narrows for the type checker
        right = node_hash(left, right)
        nodes.append((level, idx, right))
    return nodes


def _split(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def _decompose(start: int, end: int, out: list[Position]) -> None:
    size = end - start
    if size & (size - 1) == 0 and start % size == 0:
        out.append((size.bit_length() - 1, start // size))
        return
    k = _split(size)
    _decompose(start, start + k, out)
    _decompose(start + k, end, out)


def range_positions(start: int, end: int) -> list[Position]:
    """Return the positions whose hashes determine ``MTH(D[start:end])``, left to right.

    For a range that is a node of some RFC 9162 tree (every range a proof or a root asks for:
    ``start`` a multiple of the smallest power of two >= ``end - start``), that is at most
    ``2 * log2(end - start)`` positions; an arbitrary range may need up to ``end - start``.

    Raises:
        ValueError: Not ``0 <= start < end``.
    """
    if not 0 <= start < end:
        raise ValueError(f"no subtree [{start}, {end})")
    out: list[Position] = []
    _decompose(start, end, out)
    return out


def ranges_positions(ranges: Iterable[tuple[int, int]], size: int) -> set[Position]:
    """Return every position the ``ranges`` need, after checking each lies in a tree of ``size`` leaves.

    Raises:
        ValueError: A range is not ``0 <= start < end <= size``.
    """
    needed: set[Position] = set()
    for start, end in ranges:
        if not 0 <= start < end <= size:
            raise ValueError(f"subtree [{start}, {end}) is not inside a ledger of {size} receipts")
        needed.update(range_positions(start, end))
    return needed


def range_hash(start: int, end: int, nodes: Mapping[Position, bytes]) -> bytes:
    """Return ``MTH(D[start:end])`` (32 bytes) from the hashes at :func:`range_positions`.

    ``start == end`` gives the empty root (only meaningful for ``[0, 0)``).

    Raises:
        KeyError: A needed position is missing from ``nodes``.
        ValueError: ``start > end`` or ``start < 0``.
    """
    if start == end >= 0:
        return EMPTY_ROOT
    if not 0 <= start < end:
        raise ValueError(f"no subtree [{start}, {end})")
    size = end - start
    if size & (size - 1) == 0 and start % size == 0:
        return nodes[(size.bit_length() - 1, start // size)]
    k = _split(size)
    return node_hash(range_hash(start, start + k, nodes), range_hash(start + k, end, nodes))


def backfill(
    size: int,
    stored_count: Callable[[int], int],
    read_level: Callable[[int, int, int], Sequence[bytes]],
    write_level: Callable[[int, int, Iterable[bytes]], None],
    *,
    chunk: int = BACKFILL_CHUNK,
) -> int:
    """Store every node missing for a tree of ``size`` leaves (a one-time migration); return how many.

    Levels are filled bottom-up; within a level, nodes ``[stored_count(level), size >> level)``
    are computed from their children in chunks, so memory stays bounded whatever ``size``.

    Args:
        size: The number of leaves.
        stored_count: ``stored_count(level)`` is the length of the run of nodes stored at
            ``level`` from ``idx`` 0 (nodes after a hole are recomputed, so ``write_level``
            must leave an already stored position as it is).
        read_level: ``read_level(level, lo, hi)`` returns the hashes at ``level`` for ``idx``
            in ``[lo, hi)``, in order (level 0: the leaves).
        write_level: ``write_level(level, lo, hashes)`` stores hashes at ``idx`` ``lo``, ``lo + 1``...
        chunk: Nodes per round trip.
    """
    written = 0
    level = 1
    while size >> level:
        need = size >> level
        have = stored_count(level)
        for lo in range(have, need, chunk):
            hi = min(need, lo + chunk)
            children = read_level(level - 1, 2 * lo, 2 * hi)
            if len(children) != 2 * (hi - lo):
                raise ValueError(f"level {level - 1} is missing nodes in [{2 * lo}, {2 * hi})")
            write_level(level, lo, [node_hash(children[i], children[i + 1]) for i in range(0, len(children), 2)])
            written += hi - lo
        level += 1
    return written
