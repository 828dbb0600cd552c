"""Merkle trees over a batch of devices, built exactly as ``DeviceLicenses`` verifies them.

Construction (the contract, ``test/devices/merkle.js`` and this module agree):

* Device ``i`` of a batch (``0 <= i < count``) with id hash ``h`` (32 bytes,
  keccak256 of its canonical id) has the leaf
  ``keccak256(keccak256(abi.encode(uint256 i, bytes32 h)))`` — OpenZeppelin's
  standard leaf. The double hash makes a leaf a hash of 32 bytes while an inner
  node is a hash of 64, so no leaf can be passed off as an inner node, and the
  index binds each device to its place in the revocation bitmap.
* Level 0 holds the leaves in index order. Each level above pairs neighbours
  ``(0, 1), (2, 3), …`` into ``keccak256(left ‖ right)``, positionally: the
  pair is never sorted. An odd node at the end of a level moves up unchanged,
  and the proofs through it skip that level. The root is the one node of the
  top level; a batch of one device has its leaf as root and an empty proof.
* A proof lists the sibling hashes from the leaf upwards, without left/right
  flags: the device's index and the batch's device count give them. The
  verifier (``DeviceLicenses``, :func:`root_from_proof`) starts at position
  ``index`` in a tree of ``n = count`` leaves and, while ``n > 1``: if the node
  is the last one and ``n`` is odd, it moves up unchanged (no proof element);
  otherwise the next proof element is its sibling, on its left if ``index`` is
  odd, on its right if even. Then ``index >>= 1`` and ``n = (n + 1) // 2``. The
  proof must be used up exactly. A proof therefore follows the one path of its
  position in a tree of the registered size, each index below the count has at
  most one leaf that proves, and a batch registered (and paid for) as ``n``
  devices licenses at most ``n``. (With sorted pairs and no tie to the count, a
  tree of many leaves all with index 0, registered as one device, licensed them
  all.)

Levels are stored as contiguous ``bytes`` (32 bytes per node), so a tree of a
million devices is two ``bytes`` objects of 32 MB in all, and a proof is
``depth`` slices. Hashing uses the native keccak of ``safe-pysha3``.

Serialised form (:meth:`MerkleTree.to_bytes`), all integers big-endian::

    b"DLMT"  version (1 byte, = 2)  3 zero bytes  count (uint64)
    level 0 (count * 32 bytes), level 1 (ceil(count / 2) * 32), ..., root (32)

Level ``l`` starts at ``16 + 32 * (n_0 + ... + n_{l-1})`` with ``n_0 = count`` and
``n_{l+1} = ceil(n_l / 2)``, so a reader can serve a proof from the stored
bytes by offset alone. Version 1 trees hashed sorted pairs; their inner nodes and root are not
those of the same devices now, so they are refused (:class:`CorruptTree`): rebuild them from their
devices.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

from sha3 import keccak_256 as _keccak_256  # type: ignore[import-untyped]  # safe-pysha3 ships no types

MAX_DEVICES: Final = 2**32 - 1  # the contract's uint32 device count
NODE_SIZE: Final = 32
_MAGIC: Final = b"DLMT"
_VERSION: Final = 2  # 1: sorted-pair inner nodes, no longer read
_HEADER = struct.Struct(">4sB3xQ")


class CorruptTree(ValueError):
    """Serialised tree bytes that are malformed or inconsistent."""


def keccak256(data: bytes) -> bytes:
    """The Ethereum keccak-256 digest of `data` (32 bytes)."""
    digest: bytes = _keccak_256(data).digest()
    return digest


def keccak256_hex(data: bytes) -> str:
    """keccak256 of `data` as 0x-hex."""
    return "0x" + _keccak_256(data).hexdigest()  # type: ignore[no-any-return]


def leaf_hash(index: int, id_hash: bytes) -> bytes:
    """The leaf of device `index` whose canonical id hashes to `id_hash`."""
    if not 0 <= index < 2**256:
        raise ValueError(f"index {index} is not a uint256")
    _require_node(id_hash, "id_hash")
    return keccak256(keccak256(index.to_bytes(32, "big") + id_hash))


def hash_pair(left: bytes, right: bytes) -> bytes:
    """The parent of a left and a right node: keccak256(left ‖ right), in that order."""
    return keccak256(left + right)


def root_from_proof(
    leaf: bytes, proof: Sequence[bytes], *, index: int, count: int | None = None
) -> bytes | None:
    """The root that `proof` leads to from `leaf` at position `index`, or None if it does not fit.

    With `count`, the rule ``DeviceLicenses`` verifies with: the path of position `index` in a
    tree of `count` leaves, the proof used up exactly (None when it is too short or too long, or
    `index` is not below `count`). Without it, the levels where the node moved up alone are
    inferred from the proof's length (every level where `index` has a 1 bit takes an element, the
    lowest levels where it has a 0 bit take the rest): the same root as with the batch's count
    when the proof has that count's length, but no check that `root` is a tree of any given size.
    """
    for sibling in proof:
        _require_node(sibling, "proof element")
    if index < 0:
        return None
    node, used = leaf, 0
    if count is not None:
        if not 0 <= index < count:
            return None
        while count > 1:
            if index != count - 1 or count % 2 == 0:
                if used == len(proof):
                    return None
                sibling = proof[used]
                used += 1
                node = hash_pair(sibling, node) if index & 1 else hash_pair(node, sibling)
            index >>= 1
            count = (count + 1) // 2
        return node if used == len(proof) else None
    right_siblings = len(proof) - index.bit_count()
    if right_siblings < 0:
        return None
    while index or right_siblings:
        if index & 1:
            node = hash_pair(proof[used], node)
            used += 1
        elif right_siblings:
            node = hash_pair(node, proof[used])
            used += 1
            right_siblings -= 1
        index >>= 1
    return node


def verify_proof(
    root: bytes, index: int, id_hash: bytes, proof: Sequence[bytes], count: int | None = None
) -> bool:
    """True iff `proof` shows device (`index`, `id_hash`) under `root`.

    Give the batch's device `count` to check exactly what ``DeviceLicenses`` checks; without it,
    the proof is checked as a path of position `index` to `root` (see :func:`root_from_proof`).
    """
    return root_from_proof(leaf_hash(index, id_hash), proof, index=index, count=count) == root


def level_sizes(count: int) -> list[int]:
    """Node counts per level, leaves first, root last."""
    if not 1 <= count <= MAX_DEVICES:
        raise ValueError(f"a batch has 1 to {MAX_DEVICES} devices, not {count}")
    sizes = [count]
    while sizes[-1] > 1:
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


class MerkleTree:
    """The tree of one batch: root, proofs, and a compact serialised form."""

    __slots__ = ("_levels",)

    def __init__(self, levels: Sequence[bytes]) -> None:
        """Wrap already computed levels; use :meth:`build` or :meth:`from_bytes`."""
        sizes = level_sizes(len(levels[0]) // NODE_SIZE) if levels and levels[0] else []
        if not sizes or [len(level) for level in levels] != [size * NODE_SIZE for size in sizes]:
            raise CorruptTree("levels do not have the sizes of a device tree")
        self._levels: tuple[bytes, ...] = tuple(levels)

    @classmethod
    def build(cls, id_hashes: Sequence[bytes]) -> MerkleTree:
        """The tree over `id_hashes`, device ``i`` being ``id_hashes[i]``."""
        level_sizes(len(id_hashes))
        if any(len(id_hash) != NODE_SIZE for id_hash in id_hashes):
            raise ValueError("every id hash has 32 bytes")
        keccak = _keccak_256
        leaves = b"".join(
            [
                keccak(keccak(index.to_bytes(32, "big") + id_hash).digest()).digest()
                for index, id_hash in enumerate(id_hashes)
            ]
        )
        levels = [leaves]
        while len(levels[-1]) > NODE_SIZE:
            levels.append(_parent_level(levels[-1]))
        return cls(levels)

    @property
    def count(self) -> int:
        """Number of devices (leaves)."""
        return len(self._levels[0]) // NODE_SIZE

    @property
    def root(self) -> bytes:
        return self._levels[-1]

    @property
    def depth(self) -> int:
        """Number of levels above the leaves: the longest proof."""
        return len(self._levels) - 1

    @property
    def levels(self) -> tuple[bytes, ...]:
        """The levels, leaves first: node ``i`` of a level is its bytes ``32 i`` to ``32 i + 32``."""
        return self._levels

    def leaf(self, index: int) -> bytes:
        self._require_index(index)
        return self._levels[0][index * NODE_SIZE : (index + 1) * NODE_SIZE]

    def proof(self, index: int) -> list[bytes]:
        """Sibling hashes from device `index`'s leaf up to the root."""
        self._require_index(index)
        siblings: list[bytes] = []
        position = index
        for level in self._levels[:-1]:
            sibling = position ^ 1
            start = sibling * NODE_SIZE
            if start < len(level):
                siblings.append(level[start : start + NODE_SIZE])
            position >>= 1
        return siblings

    def to_bytes(self) -> bytes:
        return _HEADER.pack(_MAGIC, _VERSION, self.count) + b"".join(self._levels)

    @classmethod
    def from_bytes(cls, data: bytes, *, verify: bool = True) -> MerkleTree:
        """Read :meth:`to_bytes` output; `verify` recomputes every inner node from the leaves."""
        if len(data) < _HEADER.size:
            raise CorruptTree("shorter than the header")
        magic, version, count = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise CorruptTree("not a device Merkle tree")
        if version == 1:
            raise CorruptTree(
                "unsupported version 1 (sorted-pair hashing): rebuild the tree from its devices"
            )
        if version != _VERSION:
            raise CorruptTree(f"unsupported version {version}")
        try:
            sizes = level_sizes(count)
        except ValueError as exc:
            raise CorruptTree(str(exc)) from None
        if len(data) != _HEADER.size + NODE_SIZE * sum(sizes):
            raise CorruptTree(f"{len(data)} bytes do not hold a tree of {count} devices")
        levels: list[bytes] = []
        offset = _HEADER.size
        for size in sizes:
            levels.append(data[offset : offset + size * NODE_SIZE])
            offset += size * NODE_SIZE
        tree = cls(levels)
        if verify:
            tree.check()
        return tree

    def check(self) -> None:
        """Raise :class:`CorruptTree` unless every inner node is the hash of its children."""
        for level, (below, above) in enumerate(zip(self._levels, self._levels[1:], strict=False), start=1):
            if _parent_level(below) != above:
                raise CorruptTree(f"level {level} does not hash from level {level - 1}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MerkleTree) and self._levels == other._levels

    def __hash__(self) -> int:
        return hash(self.root)

    def __repr__(self) -> str:
        return f"MerkleTree(count={self.count}, root=0x{self.root.hex()})"

    def _require_index(self, index: int) -> None:
        if not 0 <= index < self.count:
            raise IndexError(f"device index {index} is outside 0..{self.count - 1}")


def _parent_level(level: bytes) -> bytes:
    keccak = _keccak_256
    nodes = len(level) // NODE_SIZE
    parents = []
    for start in range(0, (nodes - 1) * NODE_SIZE, 2 * NODE_SIZE):
        parents.append(keccak(level[start : start + 2 * NODE_SIZE]).digest())
    if nodes % 2:
        parents.append(level[-NODE_SIZE:])
    return b"".join(parents)


def _require_node(value: bytes, what: str) -> None:
    if len(value) != NODE_SIZE:
        raise ValueError(f"{what} has {len(value)} bytes, not 32")
