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
A bulk query's CPU work (parsing ids, rendering proofs, building answers) goes in chunks of
about ``YIELD_EVERY`` devices, and the event loop runs other requests between chunks: a single
query arriving meanwhile waits for a chunk, not for the whole bulk answer.
A bulk query may leave the proofs out (``proofs=False``): every other field is the same, and
``proof`` is null; a verifier then asks for the proofs of the devices it wants to check.
The resolver only reads the database and its tree cache, never the chain: any number of
instances can serve it (read replicas included). Nothing about a batch is cached but its
tree, which never changes for a root: status, suspension, BPC per device and revocations are
read with every query, in the same snapshot as the indexer's block.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, Final

import orjson

from exchange.kit.logging import get_logger
from exchange.licenses.device_ids import MAX_INPUT_LENGTH, DeviceId
from exchange.licenses.merkle import MerkleTree, keccak256_hex
from exchange.licenses.models import BATCH_CONFIRMED
from exchange.licenses.repository import DeviceReads, DeviceRow, Registry
from exchange.licenses.uploads import parse_references_by_chunk

log = get_logger(__name__)

MAX_BULK_DEVICES: Final = 10_000
# Devices per chunk of a bulk query's CPU work between two turns of the event loop: a chunk of
# 500 takes a few milliseconds, a turn between chunks some microseconds.
YIELD_EVERY: Final = 500


async def chunk_starts(count: int, size: int = YIELD_EVERY) -> AsyncIterator[int]:
    """``range(0, count, size)``, the event loop running before every start but the first: the
    chunks of a bulk query's work."""
    for start in range(0, count, size):
        if start:
            await asyncio.sleep(0)
        yield start


class _Pace:
    """Work counted as it is done (devices, nodes): the event loop runs each time about
    ``YIELD_EVERY`` of it are done since it last ran."""

    __slots__ = ("_done",)

    def __init__(self) -> None:
        self._done = 0

    async def done(self, work: int) -> None:
        self._done += work
        if self._done >= YIELD_EVERY:
            self._done = 0
            await asyncio.sleep(0)


_NODE_JSON: Final = 69  # a proof node in a JSON array: ',"0x', 64 hex digits, '"'


def _rendered_nodes(raws: list[bytes]) -> list[bytes]:
    """Each of `raws` (32-byte nodes one after another) as ``,"0x<hex>"`` per node, in one pass."""
    whole = b"".join(raws)
    if not whole:
        return [b""] * len(raws)
    text = b',"0x' + whole.hex(",", 32).encode("ascii").replace(b",", b'","0x') + b'"'
    rendered = []
    start = 0
    for raw in raws:
        end = start + (len(raw) >> 5) * _NODE_JSON
        rendered.append(text[start:end])
        start = end
    return rendered


class TreeProofs:
    """A batch's tree, with its proofs as JSON arrays for many devices at once.

    The proof of device ``i`` holds, on each level ``l`` below the root, the sibling of the
    device's node there, ``(i >> l) ^ 1`` (none where that is past the level's end: the odd last
    node moves up alone). From level ``split`` up, the siblings depend only on ``i >> split``, the
    device's node at that level: that part of a proof is rendered once and kept. ``split`` is the
    lowest level with ``2**split >= 4 * (depth - split)``, where what is kept (at most
    ``count / 2**split * (depth - split) * 69`` bytes) stays around a quarter of the tree's size
    or less, so only a few siblings (six for 100,000 devices) are read for each device and query.
    Rendering is pure bytes work: one hex conversion for all the devices of a query, no hashing.
    """

    __slots__ = ("_lower", "_split", "_suffixes", "_upper", "tree")

    def __init__(self, tree: MerkleTree) -> None:
        self.tree = tree
        levels = tree.levels
        depth = len(levels) - 1
        split = 0
        while split < depth and (1 << split) < 4 * (depth - split):
            split += 1
        self._split = split
        self._lower = levels[:split]
        self._upper = levels[split:depth]
        self._suffixes: dict[int, bytes] = {}

    @property
    def kept_bytes_bound(self) -> int:
        """The most the rendered upper parts of proofs can take."""
        positions = (self.tree.count + (1 << self._split) - 1) >> self._split
        return positions * len(self._upper) * _NODE_JSON

    def json_arrays(self, indices: list[int]) -> list[orjson.Fragment]:
        """The proofs of devices `indices`, each the JSON array of its nodes as 0x-hex strings
        (the bytes orjson writes for the list of :func:`_hex_nodes`)."""
        # Below `split`: the siblings, level by level for all the devices; a slice past a level's
        # end is empty, as the proof skips that level.
        columns = [
            [level[(start := ((index >> height) ^ 1) << 5) : start + 32] for index in indices]
            for height, level in enumerate(self._lower)
        ]
        lower = None
        if columns:
            lower = _rendered_nodes([b"".join(nodes) for nodes in zip(*columns, strict=True)])
        suffixes, split = self._suffixes, self._split
        arrays = []
        for position, index in enumerate(indices):
            upper = suffixes.get(index >> split)
            if upper is None:
                upper = self._suffix(index >> split)
            text = upper if lower is None else lower[position] + upper
            arrays.append(orjson.Fragment(b"[" + text[1:] + b"]" if text else b"[]"))
        return arrays

    def shared_nodes(self, indices: Iterable[int]) -> Iterator[tuple[list[int], bytes]]:
        """The nodes the proofs of devices `indices` take, once each: for each level below the root,
        from the leaves up, the nodes' indices (ascending) and the nodes one after another.

        On level ``l`` the proof of device ``i`` takes node ``(i >> l) ^ 1``, unless that is past
        the level's end (the odd last node moved up alone), exactly as :meth:`MerkleTree.proof`.
        From the first level where the devices' paths pass through at least half the nodes, every
        node of each level is given, those no proof takes too (about half of that level's at
        most, fewer on the levels above): one slice instead of a set, a sort and a slice per node
        on the levels that have the most devices' paths.
        A generator, a level at a time, so that a caller can let other work run between levels.
        """
        current = set(indices)
        levels = self.tree.levels[:-1]
        for height, level in enumerate(levels):
            if 2 * len(current) >= len(level) >> 5:
                for whole in levels[height:]:
                    yield list(range(len(whole) >> 5)), whole
                return
            siblings = {node ^ 1 for node in current}
            siblings.discard(len(level) >> 5)  # only the node after the last can be past the end
            ordered = sorted(siblings)
            yield ordered, b"".join([level[node << 5 : (node << 5) + 32] for node in ordered])
            current = {node >> 1 for node in current}

    def _suffix(self, node: int) -> bytes:
        siblings = []
        for height, level in enumerate(self._upper):
            start = ((node >> height) ^ 1) << 5
            siblings.append(level[start : start + 32])
        rendered = self._suffixes[node] = _rendered_nodes([b"".join(siblings)])[0]
        return rendered


class TreeCache:
    """Batch trees (with their kept proof parts) by upload id and root, least recently used
    first out, bounded in bytes.

    A tree never changes once stored, but an upload id may name another batch later (SQLite
    gives a withdrawn upload's id to the next one), so a cached tree serves only the root it
    was loaded for; one of another root is dropped and the upload's tree loaded again. The
    cache is a per-process accelerator, not shared state. Concurrent misses of one tree load it
    once.
    """

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._trees: OrderedDict[int, tuple[str, TreeProofs, int]] = OrderedDict()
        self._bytes = 0
        self._loading: dict[tuple[int, str], asyncio.Future[TreeProofs]] = {}

    async def get(self, batch_pk: int, root: str, load: Callable[[], Awaitable[bytes | None]]) -> TreeProofs:
        """The tree of upload `batch_pk`, whose root is `root`; `load` reads it when not cached."""
        cached = self._trees.get(batch_pk)
        if cached is not None:
            if cached[0] == root:
                self._trees.move_to_end(batch_pk)
                return cached[1]
            self._forget(batch_pk)
        key = (batch_pk, root)
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[TreeProofs] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
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
            del self._loading[key]
        proofs = TreeProofs(tree)
        future.set_result(proofs)
        self._remember(batch_pk, root, proofs, len(data) + proofs.kept_bytes_bound)
        return proofs

    def _remember(self, batch_pk: int, root: str, proofs: TreeProofs, size: int) -> None:
        self._forget(batch_pk)
        if size > self._max_bytes:
            return
        self._trees[batch_pk] = (root, proofs, size)
        self._bytes += size
        while self._bytes > self._max_bytes:
            _, (_, _, evicted_size) = self._trees.popitem(last=False)
            self._bytes -= evicted_size
        log.debug("licence.tree_cached", batch_pk=batch_pk, cached_bytes=self._bytes)

    def _forget(self, batch_pk: int) -> None:
        forgotten = self._trees.pop(batch_pk, None)
        if forgotten is not None:
            self._bytes -= forgotten[2]


def status_of(row: DeviceRow | None) -> str:
    if row is None or row.status != BATCH_CONFIRMED:
        return "unknown"
    if row.suspended:
        return "suspended"
    if row.revoked_block is not None:
        return "revoked"
    return "licensed"


# The indexed block; each device asked for as (canonical id, row or None); the trees of the
# confirmed batches found, by batch key (None when no proofs are asked for). A device's scheme is
# its canonical id's prefix.
_Named = tuple[int | None, list[tuple[str, DeviceRow | None]], dict[int, TreeProofs] | None]


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
        """Answers for the strings of a bulk query (scheme-prefixed ids or Digital Links), in order,
        to be written as JSON: each proof is an ``orjson.Fragment`` of its JSON array.

        Refusals are those of ``parse_references``. Bulk queries mostly name devices by the
        canonical ids their labels carry, and an id found in the database is a canonical id,
        valid by construction: the strings are looked up as they are, and only those not found
        are parsed (each must be valid, or the query is refused). If one of those is another
        spelling of a device, everything is parsed and looked up again, in one snapshot.
        """
        block, named, loaded = await self._named(references, proofs)
        return block, await _answers(named, loaded, self.registry, block, json_proofs=True)

    async def resolve_batched(
        self, references: Sequence[str], *, proofs: bool = True
    ) -> tuple[int | None, list[dict[str, Any]], list[dict[str, Any]]]:
        """The same query in the batched layout: the block, the batches of the devices found (each
        once, with the proof nodes its devices take, each node once) and one entry per device, in
        order, naming its batch and index. :func:`per_device_answers` turns the document these
        make into the answers of :meth:`resolve_references`."""
        block, named, loaded = await self._named(references, proofs)
        batches, entries = await _batched(named, loaded)
        return block, batches, entries

    async def _named(self, references: Sequence[str], proofs: bool) -> _Named:
        """The block, each reference's (canonical id, row) and, with `proofs`, the trees."""
        # A stored id is canonical: ASCII, and no longer than any input may be. Anything else is
        # only parsed (and refused), never sent to the database, whose parameters cannot carry
        # every string (a lone surrogate): in a statement shared by many lookups, one such id
        # would fail them all.
        storable = [
            text for text in dict.fromkeys(references) if text.isascii() and len(text) <= MAX_INPUT_LENGTH
        ]
        block, rows = await self.reads.lookup(self.registry, storable)
        unfound = [(position, text) for position, text in enumerate(references) if text not in rows]
        parsed = await _parse_in_chunks([text for _, text in unfound], [position for position, _ in unfound])
        if any(device.canonical != text for device, (_, text) in zip(parsed, unfound, strict=True)):
            devices = await _parse_in_chunks(references)
            return await _named_devices(self.reads, self.registry, self.trees, devices, proofs)
        # Every reference is a canonical id now: those found, and those parsed to themselves.
        loaded = await _trees_of(self.reads, self.trees, rows) if proofs else None
        return block, list(zip(references, map(rows.get, references), strict=True)), loaded


async def _parse_in_chunks(items: Sequence[str], positions: Sequence[int] | None = None) -> list[DeviceId]:
    """``parse_references(items, positions)``, ``YIELD_EVERY`` items at a time with the event loop
    running between chunks (the refusal is that of the whole list)."""
    devices: list[DeviceId] = []
    for number, chunk in enumerate(parse_references_by_chunk(items, positions, YIELD_EVERY)):
        if number:
            await asyncio.sleep(0)
        devices += chunk
    return devices


async def _trees_of(
    reads: DeviceReads, trees: TreeCache, rows: dict[str, DeviceRow]
) -> dict[int, TreeProofs]:
    """The trees of the confirmed batches of `rows`, by batch key."""
    loaded: dict[int, TreeProofs] = {}
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
    block, named, loaded = await _named_devices(reads, registry, trees, devices, proofs)
    return block, await _answers(named, loaded, registry, block, json_proofs=False)


async def _named_devices(
    reads: DeviceReads, registry: Registry, trees: TreeCache, devices: Sequence[DeviceId], proofs: bool
) -> _Named:
    canonical = list(dict.fromkeys(device.canonical for device in devices))
    block, rows = await reads.lookup(registry, canonical)
    loaded = await _trees_of(reads, trees, rows) if proofs else None
    return block, [(device.canonical, rows.get(device.canonical)) for device in devices], loaded


async def _answers(
    named: list[tuple[str, DeviceRow | None]],
    trees: dict[int, TreeProofs] | None,
    registry: Registry,
    block: int | None,
    *,
    json_proofs: bool,
) -> list[dict[str, Any]]:
    """The answers of devices (canonical id, row), in order. Without `trees` (no proofs
    asked for) every proof is None; an unknown device's is empty.

    Proofs are rendered a tree at a time (a large batch's devices ``YIELD_EVERY`` at a time), then
    answers built ``YIELD_EVERY`` at a time, the event loop running whenever about that many
    devices are done."""
    statuses = [status_of(row) for _, row in named]
    proofs: list[Any]
    if trees is None:
        proofs = [None] * len(named)
    else:
        proofs = [[]] * len(named)  # one shared empty list: orjson writes it, nobody changes it
        by_batch: dict[int, list[tuple[int, int]]] = {}  # (position, index in the batch)
        for position, ((_, row), status) in enumerate(zip(named, statuses, strict=True)):
            if row is not None and status != "unknown":
                by_batch.setdefault(row.batch_pk, []).append((position, row.device_index))
        pace = _Pace()
        for batch_pk, in_batch in by_batch.items():
            tree = trees[batch_pk]
            for start in range(0, len(in_batch), YIELD_EVERY):
                devices = in_batch[start : start + YIELD_EVERY]
                if json_proofs:
                    arrays = tree.json_arrays([index for _, index in devices])
                    for (position, _), array in zip(devices, arrays, strict=True):
                        proofs[position] = array
                else:
                    for position, index in devices:
                        proofs[position] = _hex_nodes(tree.tree.proof(index))
                await pace.done(len(devices))
    answers: list[dict[str, Any]] = []
    async for start in chunk_starts(len(named)):
        end = start + YIELD_EVERY
        answers += _answers_of(named[start:end], statuses[start:end], proofs[start:end], registry, block)
    return answers


def _answers_of(
    named: list[tuple[str, DeviceRow | None]],
    statuses: list[str],
    proofs: list[Any],
    registry: Registry,
    block: int | None,
) -> list[dict[str, Any]]:
    address, chain_id = registry.address, registry.chain_id
    # `shown`: the row whose batch fields an answer shows (None for an unknown device).
    return [
        {
            "device_id": canonical,
            "scheme": canonical.partition(":")[0],
            "id_hash": keccak256_hex(canonical.encode("ascii")),
            "status": status,
            "manufacturer": None if shown is None else shown.manufacturer,
            "batch_id": None if shown is None else shown.batch_id,
            "bpc_per_device_wei": None if shown is None else str(shown.bpc_per_device_wei),
            "index": None if shown is None else shown.device_index,
            "proof": proof,
            "root": None if shown is None else shown.root,
            "registry": address,
            "chain_id": chain_id,
            "block": block,
        }
        for (canonical, row), status, proof in zip(named, statuses, proofs, strict=True)
        for shown in (None if status == "unknown" else row,)
    ]


async def _batched(
    named: list[tuple[str, DeviceRow | None]], trees: dict[int, TreeProofs] | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The batched layout of the answers of devices (canonical id, row): the batches the
    devices are found in, in order of first mention, each with the nodes its devices' proofs take
    (None without `trees`), and one entry per device. Built ``YIELD_EVERY`` devices (or proof nodes
    of a level) at a time, the event loop running in between."""
    batches: dict[int, dict[str, Any]] = {}
    indices: dict[int, set[int]] = {}
    entries: list[dict[str, Any]] = []
    async for start in chunk_starts(len(named)):
        for canonical, row in named[start : start + YIELD_EVERY]:
            status = status_of(row)
            if row is None or status == "unknown":
                entries.append({"device_id": canonical, "status": status, "batch_id": None, "index": None})
                continue
            in_batch = indices.get(row.batch_pk)
            if in_batch is None:
                in_batch = indices[row.batch_pk] = set()
                batches[row.batch_pk] = {
                    "batch_id": row.batch_id,
                    "manufacturer": row.manufacturer,
                    "bpc_per_device_wei": str(row.bpc_per_device_wei),
                    "root": row.root,
                    "levels": None,
                }
            index = row.device_index
            in_batch.add(index)
            entries.append(
                {"device_id": canonical, "status": status, "batch_id": row.batch_id, "index": index}
            )
    if trees is not None:
        pace = _Pace()  # nodes (and levels), over all batches
        for batch_pk, batch in batches.items():
            levels = []
            for nodes, joined in trees[batch_pk].shared_nodes(indices[batch_pk]):
                levels.append({"indices": nodes, "nodes": "0x" + joined.hex()})
                await pace.done(len(nodes) + 1)
            batch["levels"] = levels
    return list(batches.values()), entries


def per_device_answers(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The answers of a bulk query in the batched layout (``"layout": "batches"``), one per device
    as the default layout gives them: what a client does with a batched answer.

    Nothing derivable is repeated in that layout: a device's scheme is its id's prefix, its
    ``id_hash`` keccak256 of its id (a verifier computes it anyway), its batch's fields are the
    batch's entry. Device ``index`` of a batch takes, on each level ``l`` of the batch's
    ``levels``, the node ``(index >> l) ^ 1`` when the level lists it (it is missing only past a
    level's end, where the proof skips that level). The chain is the judge: a node left out or
    altered gives a proof that ``deviceStatus`` refuses.
    """
    batches = {batch["batch_id"]: batch for batch in document["batches"]}
    nodes_of: dict[int, list[dict[int, str]]] = {}
    if document["proofs"]:
        for batch_id, batch in batches.items():
            nodes_of[batch_id] = [
                {
                    node: "0x" + level["nodes"][2 + 64 * place : 66 + 64 * place]
                    for place, node in enumerate(level["indices"])
                }
                for level in batch["levels"]
            ]
    answers = []
    for entry in document["devices"]:
        device_id, batch_id, index = entry["device_id"], entry["batch_id"], entry["index"]
        batch = None if batch_id is None else batches[batch_id]
        proof: list[str] | None = None
        if document["proofs"]:
            proof = []
            if batch_id is not None:
                for height, level in enumerate(nodes_of[batch_id]):
                    node = level.get((index >> height) ^ 1)
                    if node is not None:
                        proof.append(node)
        answers.append(
            {
                "device_id": device_id,
                "scheme": device_id.partition(":")[0],
                "id_hash": keccak256_hex(device_id.encode("ascii")),
                "status": entry["status"],
                "manufacturer": None if batch is None else batch["manufacturer"],
                "batch_id": batch_id,
                "bpc_per_device_wei": None if batch is None else batch["bpc_per_device_wei"],
                "index": index,
                "proof": proof,
                "root": None if batch is None else batch["root"],
                "registry": document["registry"],
                "chain_id": document["chain_id"],
                "block": document["block"],
            }
        )
    return answers


def _hex_nodes(nodes: list[bytes]) -> list[str]:
    # One hex conversion of the whole proof, then slices: a third of the cost of one per node.
    text = b"".join(nodes).hex()
    return ["0x" + text[start : start + 64] for start in range(0, len(text), 64)]
