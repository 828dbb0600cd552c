"""The device-licence indexer: DeviceLicenses events applied to the database, and undone on reorgs.

The chain work is ``exchange.trading.indexer.ChainIndexer``'s, the same as for the Vault: a
cursor in ``chain_cursors`` with the hashes of the blocks it relied on, every decoded event in
``chain_events``, an event applied once it is ``EXCHANGE_LICENCE_INDEXER_CONFIRMATIONS`` blocks
deep, and a reorganisation found by block hash and rolled back before the new branch is read.
:class:`DeviceLicenceHandler` is what an event does to the licensing tables, and how that is undone:

* ``BatchRegistered(batchId, manufacturer, root, deviceCount, bpcPerDevice, …)`` confirms the
  oldest pending upload of that manufacturer with that root and count (on-chain id and block).
  A batch registered without a pending upload here (withdrawn before the registration was
  seen, or never uploaded) is logged: the service does not know its devices, so it cannot
  resolve them, until an upload of the same devices by the same manufacturer adopts it
  (:func:`adopt_registration`: the batch's credited events are applied again, in order).
  Undone, the upload is pending again (no on-chain id, no block; it keeps the registration's
  BPC per device), so its devices resolve as unknown until a registration on the new branch
  confirms it again.
* ``BatchToppedUp(batchId, addedPerDevice, bpcPerDevice, …)`` sets the batch's BPC per device;
  undone, it is ``bpcPerDevice - addedPerDevice`` again.
* ``DeviceRevoked(batchId, index, …)`` marks the device revoked at that block; undone, the
  device is not revoked.
* ``BatchStatusChanged(batchId, previousStatus, newStatus, …)`` suspends the batch when the new
  status is Suspended and reinstates it otherwise; undone, the previous status counts again.

Every event touches only its own batch (or device), and a reorganisation undoes events newest
first, so each undo finds the row as its event left it. The resolver's answers name the
cursor's credited block (``licence_indexer_cursors`` links the registry to the cursor), which
moves in the same transactions as the effects of the events below it. A database upgraded from
the indexer's own cursor of earlier versions keeps answering at that cursor's block until the
first pass, which starts the chain cursor there (blocks at or below it stay unprotected against
reorganisations, as they were).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.chain.binding import BoundContract
from exchange.chain.pool import PoolChain
from exchange.chain.runtime import ChainRuntime
from exchange.kit.logging import get_logger
from exchange.licenses import repository
from exchange.licenses.repository import Registry
from exchange.trading.chain_calls import ChainCalls
from exchange.trading.indexer import ChainIndexer, IndexedEvent, IndexerPosition, indexed_event

log = get_logger(__name__)
T = TypeVar("T")

SUSPENDED = 2  # IDeviceLicenses.BatchStatus.Suspended
DEVICE_EVENTS = ("BatchRegistered", "BatchToppedUp", "DeviceRevoked", "BatchStatusChanged")


async def on_chain(runtime: ChainRuntime, action: Callable[[], T]) -> T:
    """Run a blocking chain call (``ChainRuntime.run``)."""
    return await runtime.run(action)


def batch_registrations(
    pool: PoolChain, first_block: int, *, manufacturer: str | None = None, range_blocks: int | None = None
) -> list[Any]:
    """Blocking: the arguments of the ``BatchRegistered`` events from `first_block` to the head
    (of `manufacturer` only, if given), read in ranges of at most `range_blocks` blocks (in one
    query without). Nothing is read when `first_block` is past the head."""
    event = pool.devices.contract.events.BatchRegistered
    topics: list[Any] = [event.topic]
    if manufacturer is not None:
        # The signature, batchId, then the manufacturer (an address in 32 bytes).
        topics += [None, "0x" + bytes(12).hex() + manufacturer[2:].lower()]
    head = int(pool.w3.eth.block_number)
    span = range_blocks or max(head - first_block + 1, 1)
    found: list[Any] = []
    for start in range(first_block, head + 1, span):
        logs = pool.w3.eth.get_logs(
            {
                "address": pool.devices.address,
                "fromBlock": start,
                "toBlock": min(start + span - 1, head),
                "topics": topics,
            }
        )
        found += [event().process_log(entry)["args"] for entry in logs]
    return found


def registry_of(runtime: ChainRuntime) -> Registry:
    return Registry(runtime.deployment.chain_id, runtime.deployment.address("DeviceLicenses"))


class DeviceLicenceHandler:
    """DeviceLicenses events applied to the licensing tables of one registry (an ``EventHandler``)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def credit(self, session: AsyncSession, event: IndexedEvent) -> None:
        registry, batch_id, block = self.registry, event.integer("batchId"), event.block_number
        if event.name == "BatchRegistered":
            root = str(event.args["root"])
            upload = await repository.confirm_batch(
                session,
                registry,
                batch_id=batch_id,
                manufacturer=event.address("manufacturer"),
                root=root,
                device_count=event.integer("deviceCount"),
                bpc_per_device_wei=event.integer("bpcPerDevice"),
                block=block,
            )
            if upload is not None:
                log.info("licence.batch_confirmed", upload_id=upload, batch_id=batch_id, block=block)
            elif not await repository.is_confirmed(session, registry, batch_id):
                log.warning("licence.batch_unknown", batch_id=batch_id, root=root, block=block)
        elif event.name == "BatchToppedUp":
            await repository.set_bpc_per_device(session, registry, batch_id, event.integer("bpcPerDevice"))
        elif event.name == "DeviceRevoked":
            await repository.set_revoked(
                session, registry, batch_id, event.integer("index"), block, revoked=True
            )
        elif event.name == "BatchStatusChanged":
            suspended = event.integer("newStatus") == SUSPENDED
            await repository.set_suspended(session, registry, batch_id, suspended)
            log.info("licence.batch_status", batch_id=batch_id, suspended=suspended, block=block)

    async def reverse(self, session: AsyncSession, event: IndexedEvent) -> None:
        registry, batch_id, block = self.registry, event.integer("batchId"), event.block_number
        if event.name == "BatchRegistered":
            upload = await repository.unconfirm_batch(session, registry, batch_id, block)
            if upload is not None:
                log.warning("licence.batch_unconfirmed", upload_id=upload, batch_id=batch_id, block=block)
        elif event.name == "BatchToppedUp":
            previous_wei = event.integer("bpcPerDevice") - event.integer("addedPerDevice")
            await repository.set_bpc_per_device(session, registry, batch_id, previous_wei)
        elif event.name == "DeviceRevoked":
            await repository.set_revoked(
                session, registry, batch_id, event.integer("index"), block, revoked=False
            )
        elif event.name == "BatchStatusChanged":
            suspended = event.integer("previousStatus") == SUSPENDED
            await repository.set_suspended(session, registry, batch_id, suspended)
            log.warning("licence.batch_status_reversed", batch_id=batch_id, suspended=suspended, block=block)


async def adopt_registration(session: AsyncSession, registry: Registry, batch_id: int) -> None:
    """Apply again, in chain order, the credited events of batch `batch_id`, registered on chain
    while the service held no pending upload of it: its ``BatchRegistered`` confirms the upload
    just made, and its top-ups, revocations and status changes, which found no batch when they
    were credited, apply to it now."""
    handler = DeviceLicenceHandler(registry)
    for row in await repository.credited_batch_events(session, registry, batch_id):
        await handler.credit(session, indexed_event(row))
    log.info("licence.batch_adopted", batch_id=batch_id)


class _LinkedChainIndexer(ChainIndexer):
    """A ``ChainIndexer`` whose passes first make its cursor the one the registry's answers follow.

    The link is made once, under a lock, before the first pass reads the chain: from then on
    the resolver names this cursor's credited block. A registry carried over from the earlier
    indexer starts a brand new cursor at the block that indexer had applied
    (:func:`repository.follow_cursor`), so the pass reads on from the block after it.
    """

    def __init__(
        self,
        registry: Registry,
        contract: BoundContract,
        handler: DeviceLicenceHandler,
        sessionmaker: async_sessionmaker[AsyncSession],
        calls: ChainCalls,
        **settings: int,
    ) -> None:
        super().__init__(contract, DEVICE_EVENTS, handler, sessionmaker, calls, **settings)
        self.registry = registry
        self._linked_cursor: int | None = None
        self._linking = asyncio.Lock()

    async def catch_up(self) -> IndexerPosition:
        async with self._linking:
            if self._linked_cursor is None:
                cursor_id = await self.cursor_id()
                async with self._sessionmaker() as session, session.begin():
                    resumed = await repository.follow_cursor(session, self.registry, cursor_id)
                if resumed is not None:
                    log.info("licence.indexer_resumed", cursor_id=cursor_id, block=resumed)
                self._linked_cursor = cursor_id
        return await super().catch_up()


class DeviceIndexer:
    """Follows one DeviceLicenses contract into the database."""

    def __init__(
        self,
        runtime: ChainRuntime,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        confirmations: int = 0,
        max_blocks: int = 2_000,
    ) -> None:
        self.runtime = runtime
        self.registry = registry_of(runtime)
        self.chain = _LinkedChainIndexer(
            self.registry,
            runtime.pool.devices,
            DeviceLicenceHandler(self.registry),
            sessionmaker,
            ChainCalls(embedded=runtime.embedded),
            chain_id=runtime.deployment.chain_id,
            deploy_block=runtime.deployment.deploy_block,
            confirmations=confirmations,
            max_blocks=max_blocks,
        )

    async def catch_up(self) -> int:
        """Undo what left the chain, apply every event deep enough; return the credited block."""
        return (await self.position()).credited_block

    async def position(self) -> IndexerPosition:
        """One pass, as :meth:`catch_up`, with the head, the scanned block and any fork point found."""
        return await self.chain.catch_up()

    async def run(self, interval_s: float) -> None:
        """Catch up every `interval_s` seconds until cancelled (``ChainIndexer.run``)."""
        await self.chain.run(interval_s)
