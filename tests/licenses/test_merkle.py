"""Device Merkle trees: agreement with an independent reference, proofs, serialised form."""

from __future__ import annotations

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
GOLDEN_ROOT_SN0_TO_SN4 = bytes.fromhex("fbd6eafb6738b91d4eb15865bf44c4ea291f958035364f2d528427772ae648f6")

hashes = st.binary(min_size=32, max_size=32)


def reference_root(id_hashes: list[bytes]) -> bytes:
    """The construction written the plain way, with eth-abi and eth-utils' keccak."""
    level = [keccak(keccak(encode(["uint256", "bytes32"], [i, h]))) for i, h in enumerate(id_hashes)]
    while len(level) > 1:
        pairs = [sorted(level[i : i + 2]) for i in range(0, len(level) - 1, 2)]
        level = [keccak(a + b) for a, b in pairs] + ([level[-1]] if len(level) % 2 else [])
    return level[0]


def test_golden_root_shared_with_javascript() -> None:
    ids = [parse_device_id("serial", f"acme:SN{n}") for n in range(5)]
    assert MerkleTree.build([d.id_hash for d in ids]).root == GOLDEN_ROOT_SN0_TO_SN4


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
    assert root_from_proof(left, [right]) == tree.root
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
        MerkleTree.from_bytes(bytes(data[:4]) + b"\x02" + bytes(data[5:]))
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
        root_from_proof(tree.leaf(0), [b"\x01"])
    with pytest.raises(CorruptTree):
        MerkleTree([b"\x00" * 64, b"\x00" * 64])
