"""The licence resolver: a device id in, the device's licence and its proof out.

An answer holds at the block the indexer has applied (``block``) and carries everything a
verifier needs to check it on chain itself: ``deviceStatus(batch_id, index, id_hash, proof)``
on ``registry`` (chain ``chain_id``) returns ``Licensed`` exactly when the answer says
``licensed``. Status rules, in the contract's order:

* ``unknown`` — no confirmed batch of this registry holds the device (never uploaded, or
  uploaded but not registered on chain yet);
* ``suspended`` — the batch is suspended (checked before revocation, as ``deviceStatus`` does);
* ``revoked`` — the device was revoked;
* ``licensed`` — otherwise.

Single and bulk queries run the same code, so a bulk answer is the list of single answers.
A bulk query may leave the proofs out (``proofs=False``): every other field is the same, and
``proof`` is null; a verifier then asks for the proofs of the devices it wants to check.
The resolver only reads the database and its tree cache, never the chain: any number of
instances can serve it (read replicas included). Nothing about a batch is cached but its
tree, which never changes: status, suspension, BPC per device and revocations are read
with every query, in the same snapshot as the indexer's block.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from exchange.kit.errors import DomainError
from exchange.kit.logging import get_logger
from exchange.licenses.device_ids import DeviceId
from exchange.licenses.merkle import MerkleTree, keccak256
from exchange.licenses.models import BATCH_CONFIRMED
from exchange.licenses.repository import DeviceReads, DeviceRow, Registry
from exchange.licenses.uploads import parse_references

log = get_logger(__name__)

MAX_BULK_DEVICES: Final = 10_000


class TooManyDevices(DomainError):
    status = 413
    type_slug = "too-many-devices"
    title = "Too many devices in one query"


class TreeCache:
    """Batch trees by upload id, least recently used first out, bounded in bytes.

    Trees never change once stored, so a cached tree is never stale; the cache is a
    per-process accelerator, not shared state. Concurrent misses of one tree load it once.
    """

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._trees: OrderedDict[int, tuple[MerkleTree, int]] = OrderedDict()
        self._bytes = 0
        self._loading: dict[int, asyncio.Future[MerkleTree]] = {}

    async def get(self, batch_pk: int, root: str, load: Callable[[], Awaitable[bytes | None]]) -> MerkleTree:
        cached = self._trees.get(batch_pk)
        if cached is not None:
            self._trees.move_to_end(batch_pk)
            return cached[0]
        pending = self._loading.get(batch_pk)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[MerkleTree] = asyncio.get_running_loop().create_future()
        self._loading[batch_pk] = future
        try:
            data = await load()
            if data is None:
                raise LookupError(f"batch {batch_pk} has no stored tree")
            # Verifying every inner node would take a second per million devices; the root check
            # catches a tree stored for another batch, and verifiers check proofs on chain anyway.
            tree = await asyncio.to_thread(MerkleTree.from_bytes, data, verify=False)
            if "0x" + tree.root.hex() != root:
                raise LookupError(f"the stored tree of batch {batch_pk} does not have the batch's root")
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            del self._loading[batch_pk]
        future.set_result(tree)
        self._remember(batch_pk, tree, len(data))
        return tree

    def _remember(self, batch_pk: int, tree: MerkleTree, size: int) -> None:
        if size > self._max_bytes:
            return
        self._trees[batch_pk] = (tree, size)
        self._bytes += size
        while self._bytes > self._max_bytes:
            _, (_, evicted_size) = self._trees.popitem(last=False)
            self._bytes -= evicted_size
        log.debug("licence.tree_cached", batch_pk=batch_pk, cached_bytes=self._bytes)


def status_of(row: DeviceRow | None) -> str:
    if row is None or row.status != BATCH_CONFIRMED:
        return "unknown"
    if row.suspended:
        return "suspended"
    if row.revoked_block is not None:
        return "revoked"
    return "licensed"


class Resolver:
    """One process's resolver: the registry it answers for, its reads and its tree cache.

    Built by the licensing start-up hook of the full service, or alone by the resolver-only
    app (``exchange licence resolver``); kept on ``app.state.resolver`` either way.
    """

    def __init__(self, registry: Registry, reads: DeviceReads, trees: TreeCache) -> None:
        self.registry = registry
        self.reads = reads
        self.trees = trees

    async def resolve(
        self, devices: Sequence[DeviceId], *, proofs: bool = True
    ) -> tuple[int | None, list[dict[str, Any]]]:
        return await resolve(self.reads, self.registry, self.trees, devices, proofs=proofs)

    async def resolve_references(
        self, references: Sequence[str], *, proofs: bool = True
    ) -> tuple[int | None, list[dict[str, Any]]]:
        """Answers for the strings of a bulk query (scheme-prefixed ids or Digital Links), in order.

        Refusals are those of ``parse_references``. Bulk queries mostly name devices by the
        canonical ids their labels carry, and an id found in the database is a canonical id,
        valid by construction: the strings are looked up as they are, and only those not found
        are parsed (each must be valid, or the query is refused). If one of those is another
        spelling of a device, everything is parsed and looked up again, in one snapshot.
        """
        block, rows = await self.reads.lookup(self.registry, list(dict.fromkeys(references)))
        unfound = [(position, text) for position, text in enumerate(references) if text not in rows]
        parsed = parse_references([text for _, text in unfound], [position for position, _ in unfound])
        if any(device.canonical != text for device, (_, text) in zip(parsed, unfound, strict=True)):
            return await self.resolve(parse_references(references), proofs=proofs)
        schemes = {text: str(device.scheme) for device, (_, text) in zip(parsed, unfound, strict=True)}
        loaded = await _trees_of(self.reads, self.trees, rows) if proofs else None
        answers = [
            _answer(
                text,
                schemes[text] if row is None else text.partition(":")[0],
                row,
                loaded,
                self.registry,
                block,
            )
            for text in references
            for row in (rows.get(text),)
        ]
        return block, answers


async def _trees_of(
    reads: DeviceReads, trees: TreeCache, rows: dict[str, DeviceRow]
) -> dict[int, MerkleTree]:
    """The trees of the confirmed batches of `rows`, by batch key."""
    loaded: dict[int, MerkleTree] = {}
    for found in rows.values():
        if found.batch_pk not in loaded and found.status == BATCH_CONFIRMED:
            batch_pk = found.batch_pk

            async def load(batch_pk: int = batch_pk) -> bytes | None:
                return await reads.tree(batch_pk)

            loaded[batch_pk] = await trees.get(batch_pk, found.root, load)
    return loaded


async def resolve(
    reads: DeviceReads,
    registry: Registry,
    trees: TreeCache,
    devices: Sequence[DeviceId],
    *,
    proofs: bool = True,
) -> tuple[int | None, list[dict[str, Any]]]:
    """The indexed block and one answer per device, in order (a device may repeat)."""
    canonical = list(dict.fromkeys(device.canonical for device in devices))
    block, rows = await reads.lookup(registry, canonical)
    loaded = await _trees_of(reads, trees, rows) if proofs else None
    answers = [
        _answer(device.canonical, str(device.scheme), rows.get(device.canonical), loaded, registry, block)
        for device in devices
    ]
    return block, answers


def _answer(
    canonical: str,
    scheme: str,
    row: DeviceRow | None,
    trees: dict[int, MerkleTree] | None,
    registry: Registry,
    block: int | None,
) -> dict[str, Any]:
    """One device's answer; without `trees` (no proofs asked for) its proof is None."""
    status = status_of(row)
    answer: dict[str, Any] = {
        "device_id": canonical,
        "scheme": scheme,
        "id_hash": "0x" + keccak256(canonical.encode("ascii")).hex(),
        "status": status,
        "manufacturer": None,
        "batch_id": None,
        "bpc_per_device_wei": None,
        "index": None,
        "proof": [] if trees is not None else None,
        "root": None,
        "registry": registry.address,
        "chain_id": registry.chain_id,
        "block": block,
    }
    if row is not None and status != "unknown":
        answer.update(
            manufacturer=row.manufacturer,
            batch_id=row.batch_id,
            bpc_per_device_wei=str(row.bpc_per_device_wei),
            index=row.device_index,
            root=row.root,
        )
        if trees is not None:
            answer["proof"] = _hex_nodes(trees[row.batch_pk].proof(row.device_index))
    return answer


def _hex_nodes(nodes: list[bytes]) -> list[str]:
    # One hex conversion of the whole proof, then slices: a third of the cost of one per node.
    text = b"".join(nodes).hex()
    return ["0x" + text[start : start + 64] for start in range(0, len(text), 64)]
