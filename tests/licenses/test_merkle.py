"""Device Merkle trees: agreement with an independent reference, proofs, serialised form."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from eth_abi.abi import encode
from eth_utils.crypto import keccak
from hypothesis import given
from hypothesis import strategies as st

from exchange.licenses.device_ids import parse_device_id
from exchange.licenses.merkle import (
    NODE_SIZE,
    CorruptTree,
    MerkleTree,
    hash_pair,
    leaf_hash,
    level_sizes,
    root_from_proof,
    verify_proof,
)

# Also asserted by test/devices/verification.test.js: the JavaScript tree agrees.
GOLDEN_ROOT_SN0_TO_SN4 = bytes.fromhex("bb4e8c552de6138077225f489e75e44bc8ef689c38c976f56f1ec1114a751720")
# The same devices' root under the former sorted-pair construction, which version 1 trees hold.
SORTED_PAIR_ROOT_SN0_TO_SN4 = bytes.fromhex(
    "fbd6eafb6738b91d4eb15865bf44c4ea291f958035364f2d528427772ae648f6"
)

hashes = st.binary(min_size=32, max_size=32)


def reference_leaves(id_hashes: list[bytes]) -> list[bytes]:
    return [keccak(keccak(encode(["uint256", "bytes32"], [i, h]))) for i, h in enumerate(id_hashes)]


def reference_root(id_hashes: list[bytes], leaves: list[bytes] | None = None) -> bytes:
    """The construction written the plain way, with eth-abi and eth-utils' keccak (over `leaves`
    when they are given, the leaves of `id_hashes` already computed)."""
    level = reference_leaves(id_hashes) if leaves is None else leaves
    while len(level) > 1:
        pairs = [level[i : i + 2] for i in range(0, len(level) - 1, 2)]
        level = [keccak(left + right) for left, right in pairs] + ([level[-1]] if len(level) % 2 else [])
    return level[0]


def sorted_pair_root(id_hashes: list[bytes], leaves: list[bytes] | None = None) -> tuple[bytes, bool]:
    """The former construction (sorted pairs): its root, and whether any pair it hashed was
    in descending order (the one case where its root differs from the positional root)."""
    level, descending = reference_leaves(id_hashes) if leaves is None else leaves, False
    while len(level) > 1:
        pairs = [level[i : i + 2] for i in range(0, len(level) - 1, 2)]
        descending = descending or any(left > right for left, right in pairs)
        level = [keccak(min(pair) + max(pair)) for pair in pairs] + ([level[-1]] if len(level) % 2 else [])
    return level[0], descending


def contract_root(leaf: bytes, index: int, count: int, proof: list[bytes]) -> bytes | None:
    """``DeviceLicenses``' check written again: the path of `index` in a tree of `count` leaves,
    the proof used up exactly; None where the contract answers InvalidProof for the length."""
    node, siblings = leaf, iter(proof)
    while count > 1:
        if not (index == count - 1 and count % 2 == 1):
            sibling = next(siblings, None)
            if sibling is None:
                return None
            node = keccak(sibling + node) if index % 2 else keccak(node + sibling)
        index, count = index // 2, (count + 1) // 2
    return node if next(siblings, None) is None else None


def test_golden_root_shared_with_javascript() -> None:
    ids = [parse_device_id("serial", f"acme:SN{n}") for n in range(5)]
    assert MerkleTree.build([d.id_hash for d in ids]).root == GOLDEN_ROOT_SN0_TO_SN4
    assert sorted_pair_root([d.id_hash for d in ids]) == (SORTED_PAIR_ROOT_SN0_TO_SN4, True)


def mirrored_root(leaves: list[bytes]) -> bytes:
    """The root with every pair hashed right before left."""
    level = leaves
    while len(level) > 1:
        pairs = [level[i : i + 2] for i in range(0, len(level) - 1, 2)]
        level = [keccak(right + left) for left, right in pairs] + ([level[-1]] if len(level) % 2 else [])
    return level[0]


def check_against_the_contract_rule(id_hashes: list[bytes], indices: list[int]) -> None:
    """The tree is the reference's; the proofs of `indices` lead to its root under the contract's
    rule and under merkle.py's, and fail with an element more or less, swapped or in a mirrored
    tree; the root is the sorted-pair root exactly where no pair was in descending order."""
    tree, count = MerkleTree.build(id_hashes), len(id_hashes)
    leaves = reference_leaves(id_hashes)
    assert tree.root == reference_root(id_hashes, leaves)
    sorted_root, descending = sorted_pair_root(id_hashes, leaves)
    assert (tree.root != sorted_root) == descending
    mirrored = mirrored_root(leaves)
    assert (mirrored == tree.root) == (count == 1)
    for index in indices:
        id_hash, leaf, proof = id_hashes[index], tree.leaf(index), tree.proof(index)
        assert leaf == leaves[index] == leaf_hash(index, id_hash)
        assert contract_root(leaf, index, count, proof) == tree.root
        assert root_from_proof(leaf, proof, index=index, count=count) == tree.root
        assert root_from_proof(leaf, proof, index=index) == tree.root
        assert verify_proof(tree.root, index, id_hash, proof, count)
        assert verify_proof(tree.root, index, id_hash, proof)
        if count > 1:
            assert not verify_proof(mirrored, index, id_hash, proof, count)
        for wrong in ([*proof, bytes(32)], [*proof, tree.root], proof[:-1], proof[1:]):
            if len(wrong) != len(proof):
                assert contract_root(leaf, index, count, wrong) is None
                assert root_from_proof(leaf, wrong, index=index, count=count) is None
                assert not verify_proof(tree.root, index, id_hash, wrong, count)
        if len(proof) >= 2:
            swapped = [proof[1], proof[0], *proof[2:]]
            assert contract_root(leaf, index, count, swapped) != tree.root
            assert not verify_proof(tree.root, index, id_hash, swapped, count)
        for other in (count - 1, count + 1, 2 * count):
            if index < other:
                expected = contract_root(leaf, index, other, proof) == tree.root
                assert verify_proof(tree.root, index, id_hash, proof, other) is expected


@pytest.mark.parametrize("count", range(1, 71))
def test_proofs_verify_with_the_contract_rule_for_every_small_count(count: int) -> None:
    rng = random.Random(count)
    check_against_the_contract_rule([rng.randbytes(32) for _ in range(count)], list(range(count)))


@pytest.mark.parametrize("count", [127, 128, 129, 1_000, 4_097, 16_385])
def test_proofs_verify_with_the_contract_rule_for_large_counts(count: int) -> None:
    rng = random.Random(count)
    id_hashes = [rng.randbytes(32) for _ in range(count)]
    edges = {0, 1, count // 2, count - 2, count - 1} | {2**k for k in range(count.bit_length())}
    indices = sorted({i for i in edges if i < count} | set(rng.sample(range(count), 100)))
    check_against_the_contract_rule(id_hashes, indices)


def levels_over(leaves: list[bytes], pair: Callable[[bytes, bytes], bytes]) -> list[bytes]:
    """The levels of a tree over already hashed `leaves`, built with `pair`."""
    levels, level = [b"".join(leaves)], leaves
    while len(level) > 1:
        odd = [level[-1]] if len(level) % 2 else []
        level = [pair(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)] + odd
        levels.append(b"".join(level))
    return levels


@pytest.mark.parametrize(
    "pair", [hash_pair, lambda a, b: keccak(min(a, b) + max(a, b))], ids=["positional", "sorted"]
)
def test_many_leaves_with_index_zero_do_not_prove_a_one_device_batch(
    pair: Callable[[bytes, bytes], bytes],
) -> None:
    id_hashes = [keccak(text=f"serial:acme:CLONE-{n}") for n in range(6)]
    leaves = [leaf_hash(0, id_hash) for id_hash in id_hashes]
    forged = MerkleTree(levels_over(leaves, pair))
    for k, id_hash in enumerate(id_hashes):
        assert not verify_proof(forged.root, 0, id_hash, forged.proof(k), 1)
        assert not verify_proof(forged.root, 0, id_hash, [], 1)
    # Registered as the one device it is, only that device proves.
    assert [verify_proof(leaves[0], 0, id_hash, [], 1) for id_hash in id_hashes] == [True] + [False] * 5


def test_version_1_trees_are_refused() -> None:
    ids = [parse_device_id("serial", f"acme:SN{n}") for n in range(5)]
    data = bytearray(MerkleTree.build([d.id_hash for d in ids]).to_bytes())
    assert data[4] == 2
    data[4] = 1
    with pytest.raises(CorruptTree, match="unsupported version 1"):
        MerkleTree.from_bytes(bytes(data), verify=False)


@given(st.lists(hashes, min_size=1, max_size=70))
def test_root_matches_reference_and_every_proof_verifies(id_hashes: list[bytes]) -> None:
    tree = MerkleTree.build(id_hashes)
    assert tree.root == reference_root(id_hashes)
    assert tree.count == len(id_hashes)
    assert tree.depth == len(level_sizes(len(id_hashes))) - 1
    for index, id_hash in enumerate(id_hashes):
        proof = tree.proof(index)
        assert len(proof) <= tree.depth
        assert tree.leaf(index) == leaf_hash(index, id_hash)
        assert verify_proof(tree.root, index, id_hash, proof, len(id_hashes))
        assert verify_proof(tree.root, index, id_hash, proof)


@given(st.lists(hashes, min_size=2, max_size=40, unique=True), st.data())
def test_proofs_do_not_verify_for_another_device_or_index(
    id_hashes: list[bytes], data: st.DataObject
) -> None:
    tree = MerkleTree.build(id_hashes)
    index = data.draw(st.integers(0, len(id_hashes) - 1))
    other = data.draw(st.integers(0, len(id_hashes) - 1).filter(lambda i: i != index))
    proof = tree.proof(index)
    assert not verify_proof(tree.root, other, id_hashes[index], proof)
    assert not verify_proof(tree.root, index, id_hashes[other], proof)
    assert not verify_proof(tree.root, index, id_hashes[index], proof[:-1])


@given(
    st.lists(hashes, min_size=1, max_size=30, unique=True),
    st.lists(hashes, min_size=1, max_size=30, unique=True),
)
def test_a_proof_for_one_tree_fails_in_another(first: list[bytes], second: list[bytes]) -> None:
    tree_a, tree_b = MerkleTree.build(first), MerkleTree.build(second)
    if tree_a.root == tree_b.root:
        return
    for index, id_hash in enumerate(first):
        assert not verify_proof(tree_b.root, index, id_hash, tree_a.proof(index))


def test_an_inner_node_cannot_pass_as_a_device() -> None:
    id_hashes = [keccak(text=f"serial:acme:{n}") for n in range(4)]
    tree = MerkleTree.build(id_hashes)
    left, right = hash_pair(tree.leaf(0), tree.leaf(1)), hash_pair(tree.leaf(2), tree.leaf(3))
    assert hash_pair(left, right) == tree.root
    assert root_from_proof(left, [right], index=0, count=2) == tree.root
    for index in range(4):
        assert not verify_proof(tree.root, index, left, [right])


def test_single_device_tree_has_its_leaf_as_root_and_an_empty_proof() -> None:
    id_hash = keccak(text="imei:490154203237518")
    tree = MerkleTree.build([id_hash])
    assert tree.root == leaf_hash(0, id_hash)
    assert tree.proof(0) == []
    assert tree.depth == 0
    assert verify_proof(tree.root, 0, id_hash, [])


def test_odd_nodes_move_up_and_their_proofs_skip_the_level() -> None:
    id_hashes = [keccak(text=str(n)) for n in range(5)]
    tree = MerkleTree.build(id_hashes)
    assert level_sizes(5) == [5, 3, 2, 1]
    assert len(tree.proof(4)) == 1  # leaf 4 rises alone twice, then meets the rest
    assert len(tree.proof(0)) == 3


@given(st.lists(hashes, min_size=1, max_size=50))
def test_serialised_form_round_trips_and_serves_proofs_by_offset(id_hashes: list[bytes]) -> None:
    tree = MerkleTree.build(id_hashes)
    data = tree.to_bytes()
    assert MerkleTree.from_bytes(data) == tree
    assert data[-NODE_SIZE:] == tree.root
    sizes = level_sizes(len(id_hashes))
    assert len(data) == 16 + NODE_SIZE * sum(sizes)
    index = len(id_hashes) // 2
    proof, position, level_start = [], index, 16
    for size in sizes[:-1]:
        if (position ^ 1) < size:
            start = level_start + (position ^ 1) * NODE_SIZE
            proof.append(data[start : start + NODE_SIZE])
        level_start += size * NODE_SIZE
        position >>= 1
    assert proof == tree.proof(index)


def test_corrupt_bytes_are_refused() -> None:
    tree = MerkleTree.build([keccak(text=str(n)) for n in range(9)])
    data = bytearray(tree.to_bytes())
    with pytest.raises(CorruptTree, match="not a device Merkle tree"):
        MerkleTree.from_bytes(b"XXXX" + bytes(data[4:]))
    with pytest.raises(CorruptTree, match="unsupported version"):
        MerkleTree.from_bytes(bytes(data[:4]) + b"\x03" + bytes(data[5:]))
    with pytest.raises(CorruptTree, match="do not hold a tree of 9 devices"):
        MerkleTree.from_bytes(bytes(data[:-1]))
    with pytest.raises(CorruptTree, match="shorter than the header"):
        MerkleTree.from_bytes(bytes(data[:10]))
    with pytest.raises(CorruptTree, match="1 to"):
        MerkleTree.from_bytes(bytes(data[:8]) + bytes(8))
    # An inner node flipped: found by the check, and only by it.
    inner = 16 + 9 * NODE_SIZE + 5
    data[inner] ^= 1
    with pytest.raises(CorruptTree, match="level 1 does not hash from level 0"):
        MerkleTree.from_bytes(bytes(data))
    assert MerkleTree.from_bytes(bytes(data), verify=False).count == 9


def test_limits() -> None:
    with pytest.raises(ValueError, match="1 to"):
        MerkleTree.build([])
    with pytest.raises(ValueError, match="32 bytes"):
        MerkleTree.build([b"\x00" * 31])
    tree = MerkleTree.build([keccak(text="a"), keccak(text="b")])
    for index in (-1, 2):
        with pytest.raises(IndexError):
            tree.proof(index)
    with pytest.raises(ValueError, match="uint256"):
        leaf_hash(2**256, keccak(text="a"))
    with pytest.raises(ValueError, match="not 32"):
        root_from_proof(tree.leaf(0), [b"\x01"], index=0)
    with pytest.raises(CorruptTree):
        MerkleTree([b"\x00" * 64, b"\x00" * 64])
