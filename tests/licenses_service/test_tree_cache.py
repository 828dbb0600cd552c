"""The resolver's tree cache serves a batch's tree only for the root it was loaded for."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from exchange.licenses.merkle import MerkleTree, keccak256
from exchange.licenses.resolver import TreeCache, TreeProofs

Load = Callable[[], Awaitable[bytes | None]]


def tree_of(*names: str) -> MerkleTree:
    return MerkleTree.build([keccak256(name.encode()) for name in names])


def root_of(tree: MerkleTree) -> str:
    return "0x" + tree.root.hex()


def cached_size(tree: MerkleTree) -> int:
    return len(tree.to_bytes()) + TreeProofs(tree).kept_bytes_bound


class Store:
    """The database's tree of an upload, counting the reads."""

    def __init__(self, tree: MerkleTree) -> None:
        self.tree = tree
        self.reads = 0
        self.release = asyncio.Event()
        self.release.set()

    async def load(self) -> bytes | None:
        self.reads += 1
        await self.release.wait()
        return self.tree.to_bytes()


async def test_a_reused_upload_id_gets_the_tree_of_its_own_root() -> None:
    """On SQLite a withdrawn upload's id goes to the next upload (after a reorganisation left its
    registration off the chain): the tree cached under that id for the old root is not served
    for the new one, and the new tree takes the old one's place in the cache."""
    first, second = tree_of("serial:acme:A", "serial:acme:B"), tree_of("serial:acme:C")
    cache = TreeCache(cached_size(first) + cached_size(second) - 1)  # room for one of them
    old, new = Store(first), Store(second)

    assert (await cache.get(7, root_of(first), old.load)).tree.root == first.root
    assert (await cache.get(7, root_of(first), old.load)).tree.root == first.root
    assert old.reads == 1
    assert (await cache.get(7, root_of(second), new.load)).tree.root == second.root
    assert (await cache.get(7, root_of(second), new.load)).tree.root == second.root
    assert new.reads == 1


async def test_concurrent_lookups_of_one_upload_id_under_two_roots_load_each_tree() -> None:
    first, second = tree_of("serial:acme:A"), tree_of("serial:acme:B", "serial:acme:C")
    cache = TreeCache(2**20)
    old, new = Store(first), Store(second)
    old.release.clear()
    loading = asyncio.create_task(cache.get(7, root_of(first), old.load))
    await asyncio.sleep(0)  # the first lookup waits for its read
    waiting = asyncio.create_task(cache.get(7, root_of(second), new.load))
    await asyncio.sleep(0)
    old.release.set()
    assert (await loading).tree.root == first.root
    assert (await waiting).tree.root == second.root
    assert (old.reads, new.reads) == (1, 1)
