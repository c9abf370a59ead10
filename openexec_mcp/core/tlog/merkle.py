"""RFC 6962 / RFC 9162 Merkle tree hashing, inclusion proofs and consistency proofs.

The ledger of SPEC §7 is a Merkle tree over receipt leaves. Every hash here is 32 raw bytes of
SHA-256 (hex or base64 only at the edges). Leaves enter the tree as *leaf hashes*
(:func:`leaf_hash` of the leaf data); the tree hashes of RFC 9162 §2.1.1 are

- ``MTH({}) = SHA-256()``, the empty root :data:`EMPTY_ROOT`;
- ``MTH({d0}) = SHA-256(0x00 || d0)``;
- ``MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))``, ``k`` the largest power of two < n.

Proof generation reads subtree hashes through a :data:`SubtreeHasher` callback, so a store can
serve them without materialising the whole tree. ``verify_*`` functions raise
:class:`~openexec_mcp.errors.VerificationError` whose ``reason`` is one of ``malformed_hash``,
``index_out_of_range``, ``size_regression``, ``empty_tree``, ``wrong_proof_length`` or
``root_mismatch``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Final

from openexec_mcp.errors import MalformedInputError, VerificationError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_PROOF_LENGTH",
    "MAX_TREE_SIZE",
    "MerkleFrontier",
    "SubtreeHasher",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_leaves",
    "subtree_hasher_from_leaves",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE: Final = 32
"""Size of every tree hash in bytes (SHA-256)."""

EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
"""Root hash of the empty tree (RFC 9162 §2.1.1)."""

MAX_TREE_SIZE: Final = 2**63 - 1
"""Largest accepted tree size; fits a signed 64-bit database column."""

MAX_PROOF_LENGTH: Final = 64
"""No inclusion or consistency proof in a tree of at most ``MAX_TREE_SIZE`` leaves is longer."""

SubtreeHasher = Callable[[int, int], bytes]
"""``subtree_hash(start, end)`` returns ``MTH`` (32 bytes) of the leaves ``[start, end)``."""


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 9162 §2.1.1 leaf hash ``SHA-256(0x00 || data)`` (32 bytes)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 9162 §2.1.1 interior hash ``SHA-256(0x01 || left || right)`` (32 bytes)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    # The largest power of two strictly smaller than n (n >= 2).
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaves(leaves: Sequence[bytes]) -> bytes:
    """Return ``MTH`` of the given leaf hashes by the recursive definition of RFC 9162 §2.1.1.

    A slow reference for tests and full audits; :class:`MerkleFrontier` is the incremental form.

    Args:
        leaves: Leaf hashes (32 bytes each, already passed through :func:`leaf_hash`).

    Returns:
        The 32-byte root; :data:`EMPTY_ROOT` for no leaves.

    """
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(root_from_leaves(leaves[:k]), root_from_leaves(leaves[k:]))


def subtree_hasher_from_leaves(leaves: Sequence[bytes]) -> SubtreeHasher:
    """Return a :data:`SubtreeHasher` over an in-memory list of leaf hashes (for tests, small logs)."""
    return lambda start, end: root_from_leaves(leaves[start:end])


class MerkleFrontier:
    """The right edge of an append-only tree: O(log n) state, O(log n) append and root.

    The frontier holds the roots of the perfect subtrees that the tree size decomposes into, one
    per set bit of ``size``, left to right (largest first); it is what a store persists (``size``
    plus :attr:`nodes`) and reloads with :meth:`from_nodes`.
    """

    __slots__ = ("_nodes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._nodes: list[bytes] = []

    @classmethod
    def from_nodes(cls, size: int, nodes: Sequence[bytes]) -> MerkleFrontier:
        """Rebuild a frontier from persisted state.

        Args:
            size: The tree size, ``0 <= size <= MAX_TREE_SIZE``.
            nodes: The perfect subtree roots, 32 bytes each, one per set bit of ``size``.

        Raises:
            MalformedInputError: The size is out of range or does not match the nodes.

        """
        if isinstance(size, bool) or not 0 <= size <= MAX_TREE_SIZE:
            raise MalformedInputError(f"frontier size must be in 0..{MAX_TREE_SIZE}, got {size!r}")
        if len(nodes) != size.bit_count():
            raise MalformedInputError(f"frontier of size {size} needs {size.bit_count()} nodes, got {len(nodes)}")
        if any(len(node) != HASH_SIZE for node in nodes):
            raise MalformedInputError(f"frontier nodes must be {HASH_SIZE}-byte hashes")
        frontier = cls()
        frontier._size = size
        frontier._nodes = [bytes(node) for node in nodes]
        return frontier

    @property
    def size(self) -> int:
        """The number of leaves appended so far."""
        return self._size

    @property
    def nodes(self) -> tuple[bytes, ...]:
        """The perfect subtree roots, left to right (the state to persist with :attr:`size`)."""
        return tuple(self._nodes)

    def copy(self) -> MerkleFrontier:
        """Return an independent copy (e.g. to compute a tentative root)."""
        return MerkleFrontier.from_nodes(self._size, self._nodes)

    def append(self, leaf: bytes) -> None:
        """Append one leaf hash (32 bytes); raises ``ValueError`` on a wrong length or a full tree."""
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"leaf hash must be {HASH_SIZE} bytes, got {len(leaf)}")
        if self._size >= MAX_TREE_SIZE:
            raise ValueError("tree is full")
        node = bytes(leaf)
        size = self._size
        # Every trailing set bit of the old size is a perfect subtree of the same height as the
        # new node: merge until the carry stops.
        while size & 1:
            node = node_hash(self._nodes.pop(), node)
            size >>= 1
        self._nodes.append(node)
        self._size += 1

    def root(self) -> bytes:
        """Return the 32-byte root hash of the current tree (:data:`EMPTY_ROOT` when empty)."""
        if not self._nodes:
            return EMPTY_ROOT
        root = self._nodes[-1]
        for node in reversed(self._nodes[:-1]):
            root = node_hash(node, root)
        return root


def inclusion_proof(index: int, size: int, subtree_hash: SubtreeHasher) -> list[bytes]:
    """Return the inclusion proof ``PATH(index, D[size])`` of RFC 9162 §2.1.3.1.

    Args:
        index: 0-based leaf index, ``0 <= index < size``.
        size: Tree size.
        subtree_hash: Provider of subtree roots; called O(log size) times.

    Returns:
        The audit path, 32-byte hashes ordered from the leaf's sibling up to the root's child.

    Raises:
        ValueError: ``index`` is not inside the tree.

    """
    if not 0 <= index < size <= MAX_TREE_SIZE:
        raise ValueError(f"leaf index {index} is not inside a tree of size {size}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        mid = start + _split(end - start)
        if index < mid:
            path.append(subtree_hash(mid, end))
            end = mid
        else:
            path.append(subtree_hash(start, mid))
            start = mid
    path.reverse()
    return path


def consistency_proof(old_size: int, new_size: int, subtree_hash: SubtreeHasher) -> list[bytes]:
    """Return the consistency proof ``PROOF(old_size, D[new_size])`` of RFC 9162 §2.1.4.1.

    Args:
        old_size: Size of the earlier tree, ``0 < old_size <= new_size``.
        new_size: Size of the later tree.
        subtree_hash: Provider of subtree roots; called O(log new_size) times.

    Returns:
        The proof, 32-byte hashes; empty when the sizes are equal.

    Raises:
        ValueError: The sizes are not ``0 < old_size <= new_size``.

    """
    if not 0 < old_size <= new_size <= MAX_TREE_SIZE:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    proof: list[bytes] = []
    start, end = 0, new_size
    complete = True  # the flag b of SUBPROOF: the old tree is still a complete left subtree
    while old_size - start != end - start:
        k = _split(end - start)
        if old_size - start <= k:
            proof.append(subtree_hash(start + k, end))
            end = start + k
        else:
            proof.append(subtree_hash(start, start + k))
            start += k
            complete = False
    if not complete:
        proof.append(subtree_hash(start, end))
    proof.reverse()
    return proof


def _check_shape(proof: Sequence[bytes], *hashes: bytes) -> None:
    # Bound the work before touching an untrusted proof.
    if len(proof) > MAX_PROOF_LENGTH:
        raise VerificationError("wrong_proof_length", f"proof has more than {MAX_PROOF_LENGTH} hashes")
    for value in (*hashes, *proof):
        if len(value) != HASH_SIZE:
            raise VerificationError("malformed_hash", f"expected a {HASH_SIZE}-byte hash, got {len(value)} bytes")


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Verify that ``leaf`` is at ``index`` in the tree of ``size`` leaves with ``root`` (RFC 9162 §2.1.3.2).

    Args:
        leaf: The 32-byte leaf hash (not the leaf data).
        index: 0-based leaf index.
        size: Tree size.
        proof: Untrusted audit path, 32-byte hashes from the leaf's sibling upwards.
        root: The trusted 32-byte root of that tree (e.g. from a verified checkpoint).

    Raises:
        VerificationError: ``malformed_hash``, ``index_out_of_range``, ``wrong_proof_length`` or
            ``root_mismatch``; ``seq`` is ``index``.

    """
    _check_shape(proof, leaf, root)
    # (1) The index must lie inside the tree.
    if not 0 <= index < size:
        raise VerificationError("index_out_of_range", f"index {index} not inside size {size}", seq=index)
    # (2)-(4) Walk the path; fn tracks the node's index, sn the last index on its level.
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise VerificationError("wrong_proof_length", "inclusion proof is too long", seq=index)
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    # (5) The path must reach the top, and the computed root must match.
    if sn != 0:
        raise VerificationError("wrong_proof_length", "inclusion proof is too short", seq=index)
    if r != root:
        raise VerificationError("root_mismatch", "inclusion proof does not lead to the root", seq=index)


def verify_consistency(old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes) -> None:
    """Verify that the tree ``new_size``/``new_root`` extends ``old_size``/``old_root`` (RFC 9162 §2.1.4.2).

    A consistency proof from the empty tree is meaningless and refused (``empty_tree``); every
    tree extends the empty tree, so callers holding a size-0 checkpoint have nothing to check.

    Args:
        old_size: Size of the earlier tree, ``0 < old_size <= new_size``.
        new_size: Size of the later tree.
        proof: Untrusted proof, 32-byte hashes.
        old_root: Trusted 32-byte root of the earlier tree.
        new_root: 32-byte root of the later tree.

    Raises:
        VerificationError: ``malformed_hash``, ``size_regression``, ``empty_tree``,
            ``wrong_proof_length`` or ``root_mismatch``.

    """
    _check_shape(proof, old_root, new_root)
    if new_size < old_size:
        raise VerificationError("size_regression", f"new size {new_size} is below old size {old_size}")
    if old_size == 0:
        raise VerificationError("empty_tree", "consistency proof from the empty tree is meaningless")
    if old_size == new_size:
        if proof:
            raise VerificationError("wrong_proof_length", "equal sizes need an empty proof")
        if old_root != new_root:
            raise VerificationError("root_mismatch", "equal sizes but different roots")
        return
    # (1) A proof between different sizes is never empty.
    if not proof:
        raise VerificationError("wrong_proof_length", "consistency proof is empty")
    # (2) An old tree of a power-of-two size is itself a node of the new tree.
    path = [old_root, *proof] if old_size & (old_size - 1) == 0 else list(proof)
    # (3)-(4) Skip the levels where the old tree's last node is a right child.
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    # (5)-(6) Rebuild both roots from the same path.
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError("wrong_proof_length", "consistency proof is too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    # (7) Both roots must match and the path must reach the top.
    if sn != 0:
        raise VerificationError("wrong_proof_length", "consistency proof is too short")
    if fr != old_root:
        raise VerificationError("root_mismatch", "consistency proof does not lead to the old root")
    if sr != new_root:
        raise VerificationError("root_mismatch", "consistency proof does not lead to the new root")
