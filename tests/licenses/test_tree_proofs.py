"""Proofs written as JSON arrays for many devices at once (bulk answers) are the trees' proofs."""

from __future__ import annotations

import asyncio
import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.licenses.merkle import MerkleTree, level_sizes
from exchange.licenses.models import BATCH_CONFIRMED
from exchange.licenses.repository import DeviceRow, DeviceTuple
from exchange.licenses.resolver import YIELD_EVERY, TreeProofs, _batched


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


def needed(tree: MerkleTree, indices: list[int]) -> list[set[int]]:
    """Per level, the nodes the proofs of `indices` take."""
    sizes = level_sizes(tree.count)
    return [{(index >> height) ^ 1 for index in indices} - {sizes[height]} for height in range(tree.depth)]


@given(
    count=st.integers(min_value=1, max_value=3_000),
    picks=st.lists(st.floats(min_value=0, max_value=1, exclude_max=True), max_size=60),
)
@settings(max_examples=150, deadline=None)
def test_shared_nodes_give_every_proof(count: int, picks: list[float]) -> None:
    tree = random_tree(count)
    indices = [int(pick * count) for pick in picks]
    levels = list(TreeProofs(tree).shared_nodes(indices))
    assert len(levels) == tree.depth
    assert proofs_from_shared(levels, indices) == as_lists(tree, indices)
    # A level lists exactly the nodes the proofs take, each once, ascending; from the first level
    # the devices' paths pass through at least half of, every node of each level.
    sizes = level_sizes(count)
    whole_from = next(
        (height for height in range(tree.depth) if 2 * len({i >> height for i in indices}) >= sizes[height]),
        tree.depth,
    )
    for height, ((nodes, joined), taken) in enumerate(zip(levels, needed(tree, indices), strict=True)):
        level = tree.levels[height]
        if height >= whole_from:
            assert list(nodes) == list(range(sizes[height]))
            assert joined == level
        else:
            assert list(nodes) == sorted(taken)
            assert joined == b"".join(level[32 * node : 32 * node + 32] for node in nodes)


def test_shared_nodes_of_a_large_batch_are_far_fewer_than_the_proofs() -> None:
    tree = random_tree(100_000)
    rng = random.Random(5)
    indices = rng.sample(range(tree.count), 10_000)
    levels = list(TreeProofs(tree).shared_nodes(indices))
    assert proofs_from_shared(levels, indices) == as_lists(tree, indices)
    listed = sum(len(nodes) for nodes, _ in levels)
    assert listed * 3 < sum(len(tree.proof(index)) for index in indices)
    # Levels 0 to 2 list the proofs' nodes only; from level 3 (12,500 nodes, the paths of 10,000
    # random devices through about 6,900 of them) every node.
    assert [len(nodes) < len(tree.levels[height]) // 32 for height, (nodes, _) in enumerate(levels)] == [
        True,
        True,
        True,
    ] + [False] * (tree.depth - 3)


async def test_batched_answers_over_many_small_batches_let_other_work_run() -> None:
    """Sixty batches of three devices each: no level has ``YIELD_EVERY`` nodes, yet listing them
    all is several times that much work, and the event loop runs between parts of it."""
    trees = {batch_pk: TreeProofs(random_tree(4_096)) for batch_pk in range(60)}
    named: list[tuple[str, DeviceRow | None]] = []
    for batch_pk in range(60):
        for index in (5, 1_000, 4_000):
            device_id = f"serial:com.example:{batch_pk}-{index}"
            root = "0x" + trees[batch_pk].tree.root.hex()
            row = DeviceTuple(
                device_id,
                index,
                None,
                batch_pk,
                batch_pk + 1,
                BATCH_CONFIRMED,
                False,
                "0x" + "ab" * 20,
                root,
                1,
                7,
            )
            named.append((device_id, row))
    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    counter = asyncio.create_task(count_turns())
    await asyncio.sleep(0)
    started = turns
    batches, entries = await _batched(named, trees)
    counter.cancel()
    listed = sum(len(level["indices"]) + 1 for batch in batches for level in batch["levels"])
    assert listed > 4 * YIELD_EVERY
    assert turns - started >= listed // YIELD_EVERY
    assert len(entries) == 180
