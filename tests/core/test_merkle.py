"""RFC 6962 / RFC 9162 Merkle trees: public vectors, every upstream mutation, and properties."""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openexec_mcp.core.tlog.merkle import (
    EMPTY_ROOT,
    MAX_PROOF_LENGTH,
    MerkleFrontier,
    SubtreeHasher,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_leaves,
    subtree_hasher_from_leaves,
    verify_consistency,
    verify_inclusion,
)
from openexec_mcp.errors import MalformedInputError, VerificationError

VECTORS = Path(__file__).parent.parent / "vectors" / "transparency-dev-merkle"
TREE: dict[str, Any] = json.loads((VECTORS / "rfc6962_tree.json").read_text())
LEAVES: list[bytes] = [leaf_hash(bytes.fromhex(data)) for data in TREE["leaf_inputs_hex"]]
ROOTS: list[bytes] = [bytes.fromhex(root) for root in TREE["root_hashes_hex"]]
NODES: list[list[bytes]] = [[bytes.fromhex(node) for node in level] for level in TREE["node_hashes_hex"]]


def synthetic_leaves(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def cached_hasher(leaves: list[bytes]) -> SubtreeHasher:
    return functools.lru_cache(maxsize=None)(subtree_hasher_from_leaves(leaves))


def failure(check: Callable[..., None], *args: Any) -> VerificationError:
    with pytest.raises(VerificationError) as excinfo:
        check(*args)
    return excinfo.value


BIT = st.tuples(st.integers(0, 31), st.integers(0, 7))  # (byte, bit) within a 32-byte hash


def flip(value: bytes, byte: int = 0, bit: int = 0) -> bytes:
    changed = bytearray(value)
    changed[byte] ^= 1 << bit
    return bytes(changed)


# --- The RFC 6962 test tree (transparency-dev/merkle testonly/constants.go, proof/verify_test.go) ---


def test_leaf_and_node_hashes_match_the_rfc6962_tree() -> None:
    assert NODES[0] == LEAVES
    for level in range(1, len(NODES)):
        below = NODES[level - 1]
        assert NODES[level] == [node_hash(below[2 * i], below[2 * i + 1]) for i in range(len(NODES[level]))]


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT == ROOTS[0] == root_from_leaves([]) == MerkleFrontier().root()


@pytest.mark.parametrize("size", range(9))
def test_incremental_and_reference_roots_match_the_vectors(size: int) -> None:
    frontier = MerkleFrontier()
    for leaf in LEAVES[:size]:
        frontier.append(leaf)
    assert frontier.size == size
    assert frontier.root() == root_from_leaves(LEAVES[:size]) == ROOTS[size]


@pytest.mark.parametrize("size", range(9))
def test_frontier_holds_the_compact_range_nodes(size: int) -> None:
    frontier = MerkleFrontier()
    for leaf in LEAVES[:size]:
        frontier.append(leaf)
    positions: list[list[int]] = TREE["compact_trees"][size]
    assert frontier.nodes == tuple(NODES[level][index] for level, index in positions)


@pytest.mark.parametrize("vector", TREE["inclusion_proofs"], ids=lambda v: f"leaf{v['leaf']}-size{v['size']}")
def test_inclusion_proofs_match_the_vectors(vector: dict[str, Any]) -> None:
    index: int = vector["leaf"] - 1
    size: int = vector["size"]
    expected = [bytes.fromhex(h) for h in vector["proof_hex"]]
    assert inclusion_proof(index, size, subtree_hasher_from_leaves(LEAVES[:size])) == expected
    verify_inclusion(LEAVES[index], index, size, expected, ROOTS[size])


@pytest.mark.parametrize("vector", TREE["consistency_proofs"], ids=lambda v: f"{v['size1']}-{v['size2']}")
def test_consistency_proofs_match_the_vectors(vector: dict[str, Any]) -> None:
    old: int = vector["size1"]
    new: int = vector["size2"]
    expected = [bytes.fromhex(h) for h in vector["proof_hex"]]
    assert consistency_proof(old, new, subtree_hasher_from_leaves(LEAVES[:new])) == expected
    verify_consistency(old, new, expected, ROOTS[old], ROOTS[new])


# --- Every upstream probe (transparency-dev/merkle testdata/, see MANIFEST.json) ---

# Upstream expects these to verify; openexec-mcp refuses them on purpose (vectors README).
DELIBERATE_DEVIATIONS = {
    "consistency/additional/sizes-are-equal-one-and-proof-is-empty.json": "malformed_hash",
    "consistency/additional/sizes-are-equal-zero-and-proof-is-empty.json": "malformed_hash",
}

INCLUSION_FILES = sorted((VECTORS / "testdata" / "inclusion").rglob("*.json"))
CONSISTENCY_FILES = sorted((VECTORS / "testdata" / "consistency").rglob("*.json"))


def probe_id(path: Path) -> str:
    return path.relative_to(VECTORS / "testdata").as_posix()


def b64(values: list[str] | None) -> list[bytes]:
    return [base64.b64decode(value) for value in values or []]


def expected_reasons(probe: dict[str, Any], hashes: list[bytes], *, out_of_range: bool) -> set[str]:
    """The documented check order: hash shapes, then sizes and indexes, then length, then roots."""
    if any(len(h) != 32 for h in hashes):
        return {"malformed_hash"}
    if out_of_range:
        return {"index_out_of_range"}
    desc = probe["desc"]
    if re.search(r"modified proof|swapped roots|random root|empty root|wrong leaf", desc):
        return {"root_mismatch"}
    if re.search(r"leafIdx|size1|size2", desc):
        return {"wrong_proof_length", "root_mismatch"}  # a moved index may keep the path length
    return {"wrong_proof_length"}


def test_all_upstream_probes_are_vendored() -> None:
    assert len(INCLUSION_FILES) == 98
    assert len(CONSISTENCY_FILES) == 98
    manifest = json.loads((VECTORS / "MANIFEST.json").read_text())
    assert sorted(manifest) == sorted(f"testdata/{probe_id(p)}" for p in INCLUSION_FILES + CONSISTENCY_FILES)


@pytest.mark.parametrize("path", INCLUSION_FILES, ids=probe_id)
def test_upstream_inclusion_probe(path: Path) -> None:
    probe = json.loads(path.read_text())
    index, size = probe.get("leafIdx", probe.get("leafIndex")), probe["treeSize"]
    leaf, root, proof = base64.b64decode(probe["leafHash"]), base64.b64decode(probe["root"]), b64(probe["proof"])
    if not probe["wantErr"]:
        verify_inclusion(leaf, index, size, proof, root)
        return
    error = failure(verify_inclusion, leaf, index, size, proof, root)
    assert error.reason in expected_reasons(probe, [leaf, root, *proof], out_of_range=not 0 <= index < size)


@pytest.mark.parametrize("path", CONSISTENCY_FILES, ids=probe_id)
def test_upstream_consistency_probe(path: Path) -> None:
    probe = json.loads(path.read_text())
    old, new = probe["size1"], probe["size2"]
    old_root, new_root, proof = base64.b64decode(probe["root1"]), base64.b64decode(probe["root2"]), b64(probe["proof"])
    deviation = DELIBERATE_DEVIATIONS.get(probe_id(path))
    if not probe["wantErr"] and deviation is None:
        verify_consistency(old, new, proof, old_root, new_root)
        return
    error = failure(verify_consistency, old, new, proof, old_root, new_root)
    if deviation is not None:
        assert not probe["wantErr"]
        assert error.reason == deviation
    elif all(len(h) == 32 for h in [old_root, new_root, *proof]) and (new < old or old == 0):
        assert error.reason == ("size_regression" if new < old else "empty_tree")
    else:
        assert error.reason in expected_reasons(probe, [old_root, new_root, *proof], out_of_range=False)


# --- Semantics the upstream probes hide behind malformed placeholder roots ---


def test_inclusion_outside_the_tree_is_index_out_of_range_with_seq() -> None:
    error = failure(verify_inclusion, LEAVES[0], 8, 8, [], ROOTS[8])
    assert (error.reason, error.seq) == ("index_out_of_range", 8)
    assert failure(verify_inclusion, LEAVES[0], -1, 8, [], ROOTS[8]).reason == "index_out_of_range"
    assert failure(verify_inclusion, EMPTY_ROOT, 0, 0, [], EMPTY_ROOT).reason == "index_out_of_range"


def test_consistency_to_a_smaller_tree_is_size_regression() -> None:
    proof = consistency_proof(3, 7, subtree_hasher_from_leaves(LEAVES))
    assert failure(verify_consistency, 7, 3, proof, ROOTS[7], ROOTS[3]).reason == "size_regression"


def test_consistency_from_the_empty_tree_is_refused() -> None:
    assert failure(verify_consistency, 0, 5, [], EMPTY_ROOT, ROOTS[5]).reason == "empty_tree"
    assert failure(verify_consistency, 0, 0, [], EMPTY_ROOT, EMPTY_ROOT).reason == "empty_tree"


def test_consistency_between_equal_sizes_needs_an_empty_proof_and_equal_roots() -> None:
    verify_consistency(5, 5, [], ROOTS[5], ROOTS[5])
    assert failure(verify_consistency, 5, 5, [], ROOTS[5], ROOTS[6]).reason == "root_mismatch"
    assert failure(verify_consistency, 5, 5, [ROOTS[5]], ROOTS[5], ROOTS[5]).reason == "wrong_proof_length"


def test_overlong_proofs_are_refused_before_any_hashing() -> None:
    proof = [ROOTS[1]] * (MAX_PROOF_LENGTH + 1)
    assert failure(verify_inclusion, LEAVES[0], 0, 2**62, proof, ROOTS[8]).reason == "wrong_proof_length"
    assert failure(verify_consistency, 1, 2**62, proof, ROOTS[1], ROOTS[8]).reason == "wrong_proof_length"
    assert failure(verify_inclusion, LEAVES[0], 0, 8, [*proof, b"short"], ROOTS[8]).reason == "wrong_proof_length"


def test_tree_size_is_bound_by_the_root_not_by_the_audit_path() -> None:
    # Leaf 0's path in a 3-leaf tree, [l1, l2], folds exactly like a 4-leaf path [l1, MTH(l2, l3)]:
    # a verifier cannot tell a leaf from a subtree hash. So the size alone is not authenticated
    # by a proof; a signed checkpoint binds size and root together (test_proof.py).
    proof = inclusion_proof(0, 3, subtree_hasher_from_leaves(LEAVES))
    verify_inclusion(LEAVES[0], 0, 4, proof, ROOTS[3])
    assert failure(verify_inclusion, LEAVES[0], 0, 4, proof, ROOTS[4]).reason == "root_mismatch"


# --- Generation, frontier state ---


def test_proof_generation_asks_only_log_n_subtree_hashes() -> None:
    calls: list[tuple[int, int]] = []
    leaves = synthetic_leaves(1000)
    inner = subtree_hasher_from_leaves(leaves)

    def counting(start: int, end: int) -> bytes:
        calls.append((start, end))
        return inner(start, end)

    inclusion_proof(617, 1000, counting)
    assert len(calls) <= 10
    calls.clear()
    consistency_proof(617, 1000, counting)
    assert len(calls) <= 11


@pytest.mark.parametrize(("index", "size"), [(0, 0), (3, 3), (-1, 3)])
def test_inclusion_proof_of_a_leaf_outside_the_tree_is_refused(index: int, size: int) -> None:
    with pytest.raises(ValueError, match="not inside"):
        inclusion_proof(index, size, subtree_hasher_from_leaves(LEAVES))


@pytest.mark.parametrize(("old", "new"), [(0, 3), (4, 3), (-1, 3)])
def test_consistency_proof_between_impossible_sizes_is_refused(old: int, new: int) -> None:
    with pytest.raises(ValueError, match="no consistency proof"):
        consistency_proof(old, new, subtree_hasher_from_leaves(LEAVES))


def test_frontier_round_trips_through_its_persisted_state() -> None:
    frontier = MerkleFrontier()
    for leaf in LEAVES[:7]:
        frontier.append(leaf)
    restored = MerkleFrontier.from_nodes(frontier.size, frontier.nodes)
    assert (restored.size, restored.root()) == (7, ROOTS[7])
    restored.append(LEAVES[7])
    assert restored.root() == ROOTS[8]
    assert frontier.root() == ROOTS[7]  # independent copies


def test_frontier_copy_is_independent() -> None:
    frontier = MerkleFrontier()
    frontier.append(LEAVES[0])
    tentative = frontier.copy()
    tentative.append(LEAVES[1])
    assert (frontier.root(), tentative.root()) == (ROOTS[1], ROOTS[2])


@pytest.mark.parametrize(
    ("size", "nodes"),
    [(3, [ROOTS[2]]), (1, [ROOTS[1][:31]]), (-1, []), (True, [ROOTS[1]]), (2**63, [ROOTS[1]])],
    ids=["too-few-nodes", "short-node", "negative-size", "bool-size", "too-large"],
)
def test_frontier_refuses_malformed_persisted_state(size: int, nodes: list[bytes]) -> None:
    with pytest.raises(MalformedInputError):
        MerkleFrontier.from_nodes(size, nodes)


def test_frontier_refuses_a_leaf_that_is_not_a_hash() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        MerkleFrontier().append(b"leaf data, not its hash")


# --- Properties ---


@settings(max_examples=25, deadline=None)
@given(size=st.integers(1, 300))
def test_inclusion_proof_verifies_for_every_index(size: int) -> None:
    leaves = synthetic_leaves(size)
    hasher, root = cached_hasher(leaves), root_from_leaves(leaves)
    for index in range(size):
        verify_inclusion(leaves[index], index, size, inclusion_proof(index, size, hasher), root)


@settings(max_examples=25, deadline=None)
@given(new=st.integers(1, 300))
def test_consistency_proof_verifies_for_every_older_size(new: int) -> None:
    leaves = synthetic_leaves(new)
    hasher = cached_hasher(leaves)
    for old in range(1, new + 1):
        verify_consistency(old, new, consistency_proof(old, new, hasher), hasher(0, old), hasher(0, new))


@settings(deadline=None)
@given(data=st.lists(st.binary(max_size=8), max_size=300))
def test_incremental_root_equals_reference_root_after_every_append(data: list[bytes]) -> None:
    frontier, leaves = MerkleFrontier(), [leaf_hash(d) for d in data]
    for count, leaf in enumerate(leaves, start=1):
        frontier.append(leaf)
        assert frontier.root() == root_from_leaves(leaves[:count])
    assert MerkleFrontier.from_nodes(frontier.size, frontier.nodes).root() == frontier.root()


@settings(deadline=None)
@given(data=st.data(), size=st.integers(2, 300))
def test_any_flipped_bit_in_an_inclusion_proof_fails(data: st.DataObject, size: int) -> None:
    leaves = synthetic_leaves(size)
    index = data.draw(st.integers(0, size - 1))
    proof = inclusion_proof(index, size, cached_hasher(leaves))
    k, (byte, bit) = data.draw(st.integers(0, len(proof) - 1)), data.draw(BIT)
    root = root_from_leaves(leaves)
    tampered = [*proof[:k], flip(proof[k], byte, bit), *proof[k + 1 :]]
    assert failure(verify_inclusion, leaves[index], index, size, tampered, root).reason == "root_mismatch"
    assert failure(verify_inclusion, flip(leaves[index], byte, bit), index, size, proof, root).reason == "root_mismatch"
    assert failure(verify_inclusion, leaves[index], index, size, proof, flip(root, byte, bit)).reason == "root_mismatch"


@settings(deadline=None)
@given(data=st.data(), new=st.integers(2, 300))
def test_any_flipped_bit_in_a_consistency_proof_fails(data: st.DataObject, new: int) -> None:
    hasher = cached_hasher(synthetic_leaves(new))
    old = data.draw(st.integers(1, new - 1))
    proof = consistency_proof(old, new, hasher)
    k, (byte, bit) = data.draw(st.integers(0, len(proof) - 1)), data.draw(BIT)
    tampered = [*proof[:k], flip(proof[k], byte, bit), *proof[k + 1 :]]
    old_root, new_root = hasher(0, old), hasher(0, new)
    assert failure(verify_consistency, old, new, tampered, old_root, new_root).reason == "root_mismatch"
    assert failure(verify_consistency, old, new, proof, flip(old_root, byte, bit), new_root).reason == "root_mismatch"
    assert failure(verify_consistency, old, new, proof, old_root, flip(new_root, byte, bit)).reason == "root_mismatch"
    assert failure(verify_consistency, new, old, proof, new_root, old_root).reason == "size_regression"


@settings(deadline=None)
@given(data=st.data(), size=st.integers(1, 200))
def test_an_inclusion_proof_fails_for_any_other_tree_size(data: st.DataObject, size: int) -> None:
    leaves = synthetic_leaves(300)
    hasher = cached_hasher(leaves)
    index = data.draw(st.integers(0, size - 1))
    other = data.draw(st.integers(index + 1, 300).filter(lambda n: n != size))
    proof = inclusion_proof(index, size, hasher)
    error = failure(verify_inclusion, leaves[index], index, other, proof, hasher(0, other))
    assert error.reason in {"wrong_proof_length", "root_mismatch"}


@settings(deadline=None)
@given(data=st.data(), new=st.integers(2, 200))
def test_a_consistency_proof_fails_for_any_other_pair_of_sizes(data: st.DataObject, new: int) -> None:
    hasher = cached_hasher(synthetic_leaves(300))
    old = data.draw(st.integers(1, new - 1))
    proof = consistency_proof(old, new, hasher)
    other_old = data.draw(st.integers(1, new).filter(lambda n: n != old))
    other_new = data.draw(st.integers(old, 300).filter(lambda n: n != new))
    error = failure(verify_consistency, other_old, new, proof, hasher(0, other_old), hasher(0, new))
    assert error.reason in {"wrong_proof_length", "root_mismatch"}
    error = failure(verify_consistency, old, other_new, proof, hasher(0, old), hasher(0, other_new))
    assert error.reason in {"wrong_proof_length", "root_mismatch"}
