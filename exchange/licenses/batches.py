"""Device batches: a licensed manufacturer uploads its device ids; the chain confirms the batch.

Upload rules (all or nothing — a refused upload stores nothing):

* the caller must hold a live BPR and must not be a suspended or expelled pool member
  (``DeviceLicenses.registerBatch`` requires both; a non-member with a fee licence registers);
* at most ``MAX_BATCH_DEVICES`` devices (413 above);
* the BPC per device is 1 .. 2^128 - 1 and at least the registry's ``minBpcPerDevice``;
* every id is valid and listed once (``uploads``), and none is already in another batch of
  this registry (``Conflict`` naming them: a device resolves to one batch), except a pending
  upload older than the pending TTL (``EXCHANGE_LICENCE_PENDING_UPLOAD_TTL_S``), which gives
  them up: it is deleted;
* the manufacturer's pending uploads hold at most ``EXCHANGE_LICENCE_PENDING_DEVICES_MAX``
  devices with this one (``Conflict``);
* the caller holds the BPC the registration will take (device count times BPC per device).

The service builds the Merkle tree, stores the batch as *pending* with its tree and one row
per device, and returns the unsigned ``approve`` (when needed) and ``registerBatch``
transactions for the manufacturer to sign. The indexer confirms the batch when the chain's
``BatchRegistered`` event appears: it confirms the oldest pending upload of that manufacturer
with that root and device count.

A registration the chain holds past the block the indexer credited (awaiting confirmations,
or the next poll) already belongs to the upload it will confirm, and a second
``registerBatch`` would register the root again and lock its BPC for good. So:

* asking again for a pending upload's transactions (e.g. after the allowance changed) answers
  ``Conflict``, naming the batch and block, once such a registration of it is on chain;
* withdrawing a pending upload, which frees its device ids, answers the same ``Conflict``
  then: the upload stays, and the indexer confirms it (a confirmed batch is on chain for good);
* an upload whose registration is on chain already, past the credited block (the earlier
  upload was withdrawn before the registration was mined), is stored pending with nothing to
  sign: the indexer confirms it, as it is then the pending upload that registration matches.
  One credited already without an upload to confirm is adopted at once (``adopt_registration``).

``pending_uploads`` withdraws a pending upload and answers its transactions again.

No database transaction is open while the chain is read: on SQLite every transaction holds the
database's write lock from its start, and on PostgreSQL a pooled connection, so a slow node would
hold up every writer, or the pool. An upload reads what it depends on in short transactions (the
uploads holding its ids, the credited block, the manufacturer's pending devices), reads the chain,
then stores the batch in one transaction that reads it all again: the stale uploads it deletes
are those the chain was read for and still pending, the ids and the pending devices are checked
again. When a stale upload the chain was not read for holds the ids by then, or the credited
block went back (a reorganisation undone: the chain was read from too late a block), it starts
over, up to ``READ_ATTEMPTS`` times (then ``BatchChangedMeanwhile``, 409, which a retry gets past).

On PostgreSQL that transaction runs beside others (the indexer's, other uploads', withdrawals'),
so it takes locks, each writer in the same order: the manufacturer's pending room (an advisory
lock: two of its uploads at once count each other's devices), then the stale uploads it may
release, still pending (one the indexer confirmed meanwhile keeps its ids), then their devices;
new device rows go in id order. A transaction PostgreSQL ends anyway (deadlock, serialization
failure) is read again like a change meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.chain.pool import MemberStatus, PoolChain
from exchange.chain.runtime import ChainRuntime
from exchange.db.base import utc_now
from exchange.kit.errors import Conflict, Forbidden, NotFound, ValidationFailed
from exchange.kit.logging import get_logger
from exchange.licenses import repository, transactions
from exchange.licenses.device_ids import DeviceId
from exchange.licenses.indexer import adopt_registration, batch_registrations, on_chain, registry_of
from exchange.licenses.merkle import MerkleTree
from exchange.licenses.models import DeviceBatch
from exchange.licenses.repository import Registry
from exchange.licenses.service import guarded
from exchange.licenses.transactions import UnsignedTransaction
from exchange.licenses.uploads import TooManyDevices
from exchange.settings import Settings

log = get_logger(__name__)

UINT128_MAX = 2**128 - 1
MAX_REPORTED_TAKEN = 100
#: Devices per upload: a million devices make a 61 MiB tree and a request of about a minute.
MAX_BATCH_DEVICES = 1_000_000
#: The most blocks one log query of the chain spans, unless the settings say otherwise.
LOG_RANGE_BLOCKS = 1_000
#: How often a use case reads the chain again when its write transaction finds that what it read
#: the chain for changed meanwhile, before it answers ``BatchChangedMeanwhile`` (409).
READ_ATTEMPTS = 3


@dataclass(frozen=True)
class PendingRules:
    """How long a pending upload holds its device ids, and how many a manufacturer may hold;
    ``log_range_blocks``: the most blocks one log query of the chain spans."""

    ttl: timedelta
    max_devices: int
    log_range_blocks: int = LOG_RANGE_BLOCKS

    @classmethod
    def of(cls, settings: Settings) -> PendingRules:
        return cls(
            ttl=timedelta(seconds=settings.licence_pending_upload_ttl_s),
            max_devices=settings.licence_pending_devices_max,
            log_range_blocks=settings.licence_indexer_max_blocks,
        )


async def require_licensee(runtime: ChainRuntime, manufacturer: str) -> None:
    """Refuse (403) a `manufacturer` that may not register devices: checked before an upload is read."""
    pool = runtime.pool
    await on_chain(runtime, lambda: guarded(lambda: require_registrant(pool, manufacturer)))


def require_registrant(pool: PoolChain, manufacturer: str) -> None:
    """What ``registerBatch`` asks of its caller: a live BPR, and no suspension or expulsion from
    the pool (403 otherwise). Blocking: run it off the event loop."""
    if not pool.is_licensed(manufacturer):
        raise Forbidden(_NOT_LICENSED.format(manufacturer))
    status = pool.member(manufacturer).status
    if status in (MemberStatus.SUSPENDED, MemberStatus.EXPELLED):
        name = status.name.lower()
        raise Forbidden(_NOT_ACTIVE.format(manufacturer, name), extra={"member_status": name})


_NOT_LICENSED = "{} holds no live BPR licence: only licensees register devices"
_NOT_ACTIVE = "{} is a {} pool member: suspended and expelled members register no devices"


async def upload(
    sessions: async_sessionmaker[AsyncSession],
    runtime: ChainRuntime,
    manufacturer: str,
    devices: Sequence[DeviceId],
    bpc_per_device_wei: int,
    rules: PendingRules,
) -> tuple[DeviceBatch, list[UnsignedTransaction]]:
    """Store a pending batch of `devices` for `manufacturer`; return it and its transactions.

    Device ids held by another pending upload older than ``rules.ttl`` are released: that upload
    is deleted (were it registered later, an upload of its devices adopts the registration). A
    manufacturer's pending uploads hold at most ``rules.max_devices`` devices (409 above).
    Devices whose registration by `manufacturer` is on chain already come with no transaction:
    confirmed at once when the indexer credited it, pending until it does otherwise.

    Each transaction is short and none is open while the chain is read (see the module docstring);
    the batch is stored in one that checks again what the chain was read for."""
    if not 0 < bpc_per_device_wei <= UINT128_MAX:
        raise ValidationFailed("bpc_per_device_wei must be between 1 and 2^128 - 1")
    if len(devices) > MAX_BATCH_DEVICES:
        raise TooManyDevices(
            f"{len(devices)} devices in one batch; at most {MAX_BATCH_DEVICES}",
            extra={"limit": MAX_BATCH_DEVICES},
        )
    pool = runtime.pool
    total_wei = len(devices) * bpc_per_device_wei

    def chain_checks() -> None:
        require_registrant(pool, manufacturer)
        minimum = int(pool.devices.call("minBpcPerDevice"))
        if bpc_per_device_wei < minimum:
            raise ValidationFailed(
                f"{bpc_per_device_wei} BPC base units per device is below the minimum {minimum}",
                extra={"minimum_wei": str(minimum)},
            )
        balance = pool.bpc_balance(manufacturer)
        if balance < total_wei:
            raise Conflict(
                f"{manufacturer} holds {balance} BPC base units; {len(devices)} devices at "
                f"{bpc_per_device_wei} need {total_wei}",
                extra={"balance_wei": str(balance), "needed_wei": str(total_wei)},
            )

    await on_chain(runtime, lambda: guarded(chain_checks))
    batch_upload = _Upload(
        registry_of(runtime), manufacturer, [device.canonical for device in devices], rules
    )
    tree: MerkleTree | None = None
    for _ in range(READ_ATTEMPTS):
        async with sessions() as session:
            seen = await batch_upload.holders(session, runtime, utc_now() - rules.ttl)
        releasable = await _not_registered_since(runtime, seen, rules.log_range_blocks)
        async with sessions() as session:
            await batch_upload.check_room(session, seen.held, releasable)
        if tree is None:
            # Hashing a million ids and building their tree takes seconds: off the event loop.
            tree = await asyncio.to_thread(lambda: MerkleTree.build([device.id_hash for device in devices]))
        planned = partial(_plan, pool, batch_upload, seen.first_block, tree, bpc_per_device_wei)
        awaiting, steps = await on_chain(runtime, partial(guarded, planned))
        root = "0x" + tree.root.hex()
        try:
            async with sessions() as session, session.begin():
                batch = await batch_upload.store(
                    session, runtime, seen, releasable, root, bpc_per_device_wei, tree
                )
                registered = await repository.unmatched_registration(
                    session,
                    batch_upload.registry,
                    manufacturer=manufacturer,
                    root=root,
                    device_count=len(devices),
                )
                if registered is not None:
                    # Registered on chain already (the upload was withdrawn before the indexer saw
                    # it): these devices are that batch's, confirmed now, and there is nothing to sign.
                    await adopt_registration(session, batch_upload.registry, registered)
                    awaiting, steps = None, []
        except _ChangedMeanwhile as changed:
            log.info("licence.upload_read_again", manufacturer=manufacturer, reason=str(changed))
            continue
        except DBAPIError as error:
            if not lost_to_a_concurrent_writer(error):
                raise
            log.warning("licence.upload_read_again", manufacturer=manufacturer, reason=str(error.orig)[:300])
            continue
        if awaiting is not None:
            # Mined past the credited block: the indexer confirms this upload, the oldest pending
            # one with that manufacturer, root and count, when it credits the registration.
            batch_id, block = awaiting
            log.info("licence.upload_awaits_registration", upload_id=batch.id, batch_id=batch_id, block=block)
        log.info(
            "licence.batch_uploaded",
            upload_id=batch.id,
            manufacturer=manufacturer,
            devices=len(devices),
            root=root,
        )
        return batch, steps
    raise BatchChangedMeanwhile("what the upload depends on")


class _ChangedMeanwhile(Exception):
    """What a write transaction found changed since the chain was read for it: read again."""


#: SQLSTATEs of a PostgreSQL transaction ended for another's sake: a deadlock, a serialization failure.
_LOST_TO_A_CONCURRENT_WRITER = frozenset({"40P01", "40001"})


def lost_to_a_concurrent_writer(error: DBAPIError) -> bool:
    """Whether PostgreSQL ended the transaction for a concurrent one's sake (deadlock, serialization
    failure): rolled back, nothing written, and the same work succeeds when read and done again.
    The batches' writers take their locks in one order (the batch row, then its devices; device
    ids in id order) so this should not happen; were it to, it is answered as a change meanwhile."""
    return getattr(error.orig, "sqlstate", None) in _LOST_TO_A_CONCURRENT_WRITER


class BatchChangedMeanwhile(Conflict):
    """What an upload or a withdrawal depends on kept changing while the chain was read for it
    (other uploads of its devices, the indexer's progress): sending the request again works."""

    type_slug = "batch-changed-meanwhile"
    title = "The batch changed while the chain was read"
    transient = True
    retry_after_s = 1

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} changed each time the chain was read for it: send the request again")


@dataclass(frozen=True)
class _Holders:
    """What a short read found holding an upload's device ids, and where the chain is read from:
    `held`, the ids a batch holds with that batch's key; `stale`, those batches that are pending
    uploads made before `created_before`."""

    first_block: int
    created_before: datetime
    held: dict[str, int]
    stale: list[DeviceBatch]


@dataclass(frozen=True)
class _Upload:
    """The rules of one upload that the database answers: read before the chain, then again
    in the transaction that stores the batch."""

    registry: Registry
    manufacturer: str
    canonical: list[str]
    rules: PendingRules

    async def holders(
        self, session: AsyncSession, runtime: ChainRuntime, created_before: datetime
    ) -> _Holders:
        """The batches that hold some of the ids, the pending uploads made before `created_before`
        among them, and the first block the indexer has not credited."""
        first_block = await first_uncredited_block(session, runtime, self.registry)
        held = await repository.holders_of(session, self.registry, self.canonical)
        stale = await repository.stale_uploads_among(session, set(held.values()), created_before)
        return _Holders(first_block, created_before, held, stale)

    async def check_room(
        self, session: AsyncSession, held: dict[str, int], releasing: Collection[int]
    ) -> None:
        """Refuse the ids `held` by an upload other than those `releasing` (409 naming them), and
        a manufacturer whose pending devices would then be over the limit (409)."""
        taken = {device_id for device_id, batch_pk in held.items() if batch_pk not in releasing}
        if taken:
            _refuse_taken(self.canonical, taken)
        pending = await repository.pending_devices_of(
            session, self.registry, self.manufacturer, excluding=releasing
        )
        if pending + len(self.canonical) > self.rules.max_devices:
            raise Conflict(
                f"{self.manufacturer} holds {pending} devices in pending uploads; with these"
                f" {len(self.canonical)} that is over {self.rules.max_devices}: register or withdraw"
                " pending uploads first",
                extra={"pending_devices": pending, "limit": self.rules.max_devices},
            )

    async def store(
        self,
        session: AsyncSession,
        runtime: ChainRuntime,
        seen: _Holders,
        releasable: list[int],
        root: str,
        bpc_per_device_wei: int,
        tree: MerkleTree,
    ) -> DeviceBatch:
        """In the write transaction: release the stale uploads the chain was read for, check the
        room again and store the pending batch. ``_ChangedMeanwhile`` when the chain was read for
        something else than what the database now holds: a stale upload it did not check, or a
        credited block gone back (a reorganisation undone: the chain was read from too late).

        The uploads to release are locked first, and only those still pending are released: one
        the indexer confirmed meanwhile keeps its ids. The manufacturer's pending room is locked
        too, so that two of its uploads at once do not both pass the cap."""
        if await first_uncredited_block(session, runtime, self.registry) < seen.first_block:
            raise _ChangedMeanwhile("the credited block went back")
        await repository.lock_pending_room(session, self.registry, self.manufacturer)
        released = await repository.lock_stale_uploads(session, releasable, seen.created_before)
        # Read after the locks: an upload released or withdrawn while this one waited holds nothing.
        held = await repository.holders_of(session, self.registry, self.canonical)
        others = set(held.values()) - set(released)
        stale = await repository.stale_uploads_among(session, others, seen.created_before)
        if {batch.id for batch in stale} - {batch.id for batch in seen.stale}:
            raise _ChangedMeanwhile("another upload holding the ids went stale")
        await self.check_room(session, held, released)
        for batch_pk in released:
            await repository.delete_pending_batch(session, batch_pk)  # locked: still pending
            log.warning(
                "licence.stale_upload_released", upload_id=batch_pk, for_manufacturer=self.manufacturer
            )
        try:
            async with session.begin_nested():
                return await repository.add_batch(
                    session,
                    self.registry,
                    manufacturer=self.manufacturer,
                    root=root,
                    bpc_per_device_wei=bpc_per_device_wei,
                    device_ids=self.canonical,
                    tree=tree.to_bytes(),
                )
        except IntegrityError:
            # Another upload took some of these ids between our check and our insert.
            _refuse_taken(
                self.canonical, set(await repository.holders_of(session, self.registry, self.canonical))
            )
            raise


def _plan(
    pool: PoolChain, upload: _Upload, first_block: int, tree: MerkleTree, bpc_per_device_wei: int
) -> tuple[tuple[int, int] | None, list[UnsignedTransaction]]:
    """Blocking: the registration of the upload on chain past `first_block` (batch id, block), or
    the transactions that register it."""
    count, root = len(upload.canonical), "0x" + tree.root.hex()
    awaiting = registration_from(
        pool, first_block, upload.manufacturer, (root, count), upload.rules.log_range_blocks
    )
    if awaiting is not None:
        return awaiting, []
    return None, transactions.with_allowance(
        pool.bpc,
        pool.devices,
        count * bpc_per_device_wei,
        sender=upload.manufacturer,
        chain_id=upload.registry.chain_id,
        then=(
            "registerBatch",
            [tree.root, count, bpc_per_device_wei],
            f"register {count} devices at {bpc_per_device_wei} BPC base units each",
        ),
    )


async def _not_registered_since(runtime: ChainRuntime, seen: _Holders, range_blocks: int) -> list[int]:
    """The stale uploads `seen` whose registration the chain does not hold past the credited block.

    A registration mined after the block the indexer credited (waiting for confirmations, or
    mined again after a reorganisation) confirms its upload at the next passes: that upload
    keeps its ids. Before the indexer credited any block, the chain is read from the deployment,
    in ranges of at most `range_blocks` blocks.
    """
    pool = runtime.pool
    releasable = []
    for manufacturer in sorted({batch.manufacturer for batch in seen.stale}):
        registered = partial(_registered_from, pool, seen.first_block, manufacturer, range_blocks)
        on_chain_batches = await on_chain(runtime, partial(guarded, registered))
        for batch in seen.stale:
            if batch.manufacturer != manufacturer:
                continue
            if (batch.root, batch.device_count) in on_chain_batches:
                log.info("licence.stale_upload_kept", upload_id=batch.id, reason="registered on chain")
            else:
                releasable.append(batch.id)
    return sorted(releasable)


async def first_uncredited_block(session: AsyncSession, runtime: ChainRuntime, registry: Registry) -> int:
    """The first block past the one the indexer credited (the deployment's before it credited any)."""
    credited = await repository.answered_block(session, registry)
    first_block = runtime.pool.deployment.deploy_block
    return first_block if credited is None else max(credited + 1, first_block)


def _registered_from(
    pool: PoolChain, first_block: int, manufacturer: str, range_blocks: int
) -> dict[tuple[str, int], int]:
    """Blocking: the batches `manufacturer` registered from `first_block` on, as (root, device
    count) → the first batch id registered with them."""
    found = batch_registrations(pool, first_block, manufacturer=manufacturer, range_blocks=range_blocks)
    registered: dict[tuple[str, int], int] = {}
    for args in found:
        registered.setdefault(
            ("0x" + bytes(args["root"]).hex(), int(args["deviceCount"])), int(args["batchId"])
        )
    return registered


def registration_from(
    pool: PoolChain, first_block: int, manufacturer: str, batch: tuple[str, int], range_blocks: int
) -> tuple[int, int] | None:
    """Blocking: the batch id and block of the first registration by `manufacturer` of `batch`
    (root, device count) from `first_block` on, or None."""
    batch_id = _registered_from(pool, first_block, manufacturer, range_blocks).get(batch)
    if batch_id is None:
        return None
    *_, block = pool.devices.call("batchOf", batch_id)
    return batch_id, int(block)


def awaiting_confirmation(upload_id: int, registration: tuple[int, int], then: str) -> Conflict:
    batch_id, block = registration
    return Conflict(
        f"batch upload {upload_id} is registered on chain, awaiting confirmation: batch {batch_id}"
        f" in block {block}; {then}",
        extra={"batch_id": batch_id, "block": block},
    )


def _refuse_taken(canonical: Sequence[str], taken: set[str]) -> None:
    positions = [(item, device_id) for item, device_id in enumerate(canonical) if device_id in taken]
    raise Conflict(
        f"{len(positions)} device ids are already in another batch;"
        f" first: {positions[0][1]} (item {positions[0][0]})",
        extra={
            "taken_count": len(positions),
            "taken": [
                {"item": item, "device_id": device_id} for item, device_id in positions[:MAX_REPORTED_TAKEN]
            ],
        },
    )


async def owned_batch(
    session: AsyncSession,
    runtime: ChainRuntime,
    upload_id: int,
    manufacturer: str,
    *,
    for_update: bool = False,
) -> DeviceBatch:
    batch = await repository.batch_by_pk(session, registry_of(runtime), upload_id, for_update=for_update)
    if batch is None or batch.manufacturer != manufacturer:
        # Another manufacturer's batch is reported as absent: its existence is its business.
        raise NotFound(f"you have no batch upload {upload_id}")
    return batch
