"""Proofs written as JSON arrays for many devices at once (bulk answers) are the trees' proofs."""

from __future__ import annotations

import random

import orjson
import pytest

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
