"""Proofs written as JSON arrays for many devices at once (bulk answers) are the trees' proofs."""

from __future__ import annotations

import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.licenses.merkle import MerkleTree, level_sizes
from exchange.licenses.resolver import TreeProofs


def random_tree(count: int) -> MerkleTree:
    """A tree of `count` devices with random nodes: the rendering reads nodes, it never hashes."""
    rng = random.Random(count)
    return MerkleTree([rng.randbytes(32 * size) for size in level_sizes(count)])


def as_lists(tree: MerkleTree, indices: list[int]) -> list[list[str]]:
    return [["0x" + node.hex() for node in tree.proof(index)] for index in indices]


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 7, 8, 9, 63, 64, 65, 127, 128, 129, 1_000, 4_097, 70_001])
def test_json_arrays_are_the_bytes_of_the_proofs(count: int) -> None:
    tree = random_tree(count)
    proofs = TreeProofs(tree)
    rng = random.Random(-count)
    every = list(range(count)) if count <= 4_097 else sorted(rng.sample(range(count), 3_000))
    # Repeats, the ends (where odd last nodes skip levels) and any order.
    indices = [*every, 0, count - 1, *rng.choices(range(count), k=50)]
    rng.shuffle(indices)
    expected = orjson.dumps(as_lists(tree, indices))
    assert orjson.dumps(proofs.json_arrays(indices)) == expected
    assert orjson.dumps(proofs.json_arrays(indices)) == expected  # from the kept parts this time
    assert orjson.dumps(proofs.json_arrays([])) == b"[]"


def test_kept_parts_stay_within_their_bound() -> None:
    tree = random_tree(70_001)
    proofs = TreeProofs(tree)
    proofs.json_arrays(list(range(tree.count)))
    kept = sum(len(part) for part in proofs._suffixes.values())
    assert 0 < kept <= proofs.kept_bytes_bound
    assert proofs.kept_bytes_bound < len(tree.to_bytes()) // 3


def proofs_from_shared(levels: list[tuple[list[int], bytes]], indices: list[int]) -> list[list[str]]:
    """The devices' proofs from the shared nodes: on level ``l``, node ``(index >> l) ^ 1`` if listed."""
    by_place = [
        {node: "0x" + joined[32 * place : 32 * place + 32].hex() for place, node in enumerate(nodes)}
        for nodes, joined in levels
    ]
    return [
        [
            level[sibling]
            for height, level in enumerate(by_place)
            if (sibling := (index >> height) ^ 1) in level
        ]
        for index in indices
    ]


@given(
    count=st.integers(min_value=1, max_value=3_000),
    picks=st.lists(st.floats(min_value=0, max_value=1, exclude_max=True), max_size=60),
)
@settings(max_examples=150, deadline=None)
def test_shared_nodes_give_every_proof_and_nothing_else(count: int, picks: list[float]) -> None:
    tree = random_tree(count)
    indices = [int(pick * count) for pick in picks]
    levels = list(TreeProofs(tree).shared_nodes(indices))
    assert len(levels) == tree.depth
    expected = as_lists(tree, indices)
    assert proofs_from_shared(levels, indices) == expected
    # Each node once, ascending, and only the nodes some proof takes.
    for nodes, joined in levels:
        assert nodes == sorted(set(nodes))
        assert len(joined) == 32 * len(nodes)
    taken = {node for proof in expected for node in proof}
    listed = [
        "0x" + joined[start : start + 32].hex() for _, joined in levels for start in range(0, len(joined), 32)
    ]
    assert len(listed) == len(taken)
    assert set(listed) == taken


def test_shared_nodes_of_a_large_batch_are_far_fewer_than_the_proofs() -> None:
    tree = random_tree(100_000)
    rng = random.Random(5)
    indices = rng.sample(range(tree.count), 10_000)
    levels = list(TreeProofs(tree).shared_nodes(indices))
    assert proofs_from_shared(levels, indices) == as_lists(tree, indices)
    listed = sum(len(nodes) for nodes, _ in levels)
    assert listed * 3 < sum(len(tree.proof(index)) for index in indices)
    # The top level below the root lists both of its nodes.
    assert levels[-1][0] == [0, 1]
