"""A pending upload after it was made: withdrawn, or its registration transactions asked again.

The rules are ``batches``'s (its module docstring): both answer ``Conflict`` once the chain holds
the upload's registration past the block the indexer credited. Each reads the upload in a short
transaction, then the chain with none open (on SQLite every transaction holds the database's
write lock, on PostgreSQL a pooled connection), then the upload again: a withdrawal deletes it
only if it is still pending, locked, in that last transaction. When the indexer's credited block
went back meanwhile (a reorganisation undone), the chain was read from too late a block: it is
read again, up to ``READ_ATTEMPTS`` times (``BatchChangedMeanwhile`` after), as it is when
PostgreSQL ends the withdrawal's transaction for a concurrent one's sake (a deadlock).
"""

from __future__ import annotations

from functools import partial

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.chain.pool import PoolChain
from exchange.chain.runtime import ChainRuntime
from exchange.kit.errors import Conflict
from exchange.kit.logging import get_logger
from exchange.licenses import repository, transactions
from exchange.licenses.batches import (
    LOG_RANGE_BLOCKS,
    READ_ATTEMPTS,
    BatchChangedMeanwhile,
    awaiting_confirmation,
    first_uncredited_block,
    lost_to_a_concurrent_writer,
    owned_batch,
    registration_from,
    require_registrant,
)
from exchange.licenses.indexer import on_chain, registry_of
from exchange.licenses.models import BATCH_PENDING, DeviceBatch
from exchange.licenses.service import guarded
from exchange.licenses.transactions import UnsignedTransaction

log = get_logger(__name__)


async def withdraw(
    sessions: async_sessionmaker[AsyncSession],
    runtime: ChainRuntime,
    upload_id: int,
    manufacturer: str,
    *,
    range_blocks: int = LOG_RANGE_BLOCKS,
) -> None:
    """Delete a pending upload, freeing its device ids; 409 when it is confirmed, or when the
    chain holds its registration past the block the indexer credited (read in ranges of
    `range_blocks`): the indexer will confirm it, and its devices are that batch's.

    The chain is read between two short transactions; the second locks the upload and deletes
    it only if it is still pending and the credited block has not gone back."""
    pool = runtime.pool
    for _ in range(READ_ATTEMPTS):
        async with sessions() as session:
            batch, first_block = await _pending_upload(session, runtime, upload_id, manufacturer, _FOR_GOOD)
        registered = partial(
            registration_from,
            pool,
            first_block,
            manufacturer,
            (batch.root, batch.device_count),
            range_blocks,
        )
        registration = await on_chain(runtime, partial(guarded, registered))
        if registration is not None:
            raise awaiting_confirmation(upload_id, registration, "it stays until the indexer confirms it")
        try:
            async with sessions() as session, session.begin():
                current, now_first = await _pending_upload(
                    session, runtime, upload_id, manufacturer, _FOR_GOOD, for_update=True
                )
                if now_first >= first_block:
                    await repository.delete_pending_batch(session, current.id)  # locked: still pending
                    log.info("licence.batch_withdrawn", upload_id=upload_id, manufacturer=manufacturer)
                    return
        except DBAPIError as error:
            if not lost_to_a_concurrent_writer(error):
                raise
            log.warning("licence.withdrawal_read_again", upload_id=upload_id, reason=str(error.orig)[:300])
            continue
        log.info("licence.withdrawal_read_again", upload_id=upload_id, reason="the credited block went back")
    raise BatchChangedMeanwhile(f"the indexer's credited block for upload {upload_id}")


_FOR_GOOD = "batch upload {} is registered on chain (batch {}) for good"
_ALREADY = "batch upload {} is already registered as batch {}"


async def _pending_upload(
    session: AsyncSession,
    runtime: ChainRuntime,
    upload_id: int,
    manufacturer: str,
    registered: str,
    *,
    for_update: bool = False,
) -> tuple[DeviceBatch, int]:
    """`manufacturer`'s pending upload `upload_id` (404 for none, 409 with the `registered`
    message once confirmed), and the first block the indexer has not credited."""
    batch = await owned_batch(session, runtime, upload_id, manufacturer, for_update=for_update)
    if batch.status != BATCH_PENDING:
        raise Conflict(registered.format(upload_id, batch.batch_id))
    return batch, await first_uncredited_block(session, runtime, registry_of(runtime))


async def register_transactions(
    sessions: async_sessionmaker[AsyncSession],
    runtime: ChainRuntime,
    upload_id: int,
    manufacturer: str,
    *,
    range_blocks: int = LOG_RANGE_BLOCKS,
) -> list[UnsignedTransaction]:
    """The transactions of a pending upload again (e.g. after the allowance changed); 403 when
    the manufacturer may no longer register devices, 409 when the chain holds the upload's
    registration past the block the indexer credited (read in ranges of `range_blocks`).

    Nothing is written: the upload is read before the chain and once more after it, each time in
    a short transaction of its own, so that an upload confirmed or withdrawn meanwhile is answered
    as such, and one whose credited block went back is planned again."""
    for _ in range(READ_ATTEMPTS):
        async with sessions() as session:
            batch, first_block = await _pending_upload(session, runtime, upload_id, manufacturer, _ALREADY)
        plan = partial(_registration_steps, runtime.pool, batch, first_block, range_blocks)
        steps = await on_chain(runtime, partial(guarded, plan))
        async with sessions() as session:
            _, now_first = await _pending_upload(session, runtime, upload_id, manufacturer, _ALREADY)
        if now_first >= first_block:
            return steps
    raise BatchChangedMeanwhile(f"the indexer's credited block for upload {upload_id}")


def _registration_steps(
    pool: PoolChain, batch: DeviceBatch, first_block: int, range_blocks: int
) -> list[UnsignedTransaction]:
    """Blocking: the transactions that register the pending upload `batch`; 403 when its
    manufacturer may no longer register devices, 409 when the chain holds its registration past
    `first_block`."""
    manufacturer, bpc_per_device = batch.manufacturer, int(batch.bpc_per_device_wei)
    require_registrant(pool, manufacturer)
    registration = registration_from(
        pool, first_block, manufacturer, (batch.root, batch.device_count), range_blocks
    )
    if registration is not None:
        raise awaiting_confirmation(batch.id, registration, "there is nothing to sign")
    return transactions.with_allowance(
        pool.bpc,
        pool.devices,
        batch.device_count * bpc_per_device,
        sender=manufacturer,
        chain_id=batch.chain_id,
        then=(
            "registerBatch",
            [bytes.fromhex(batch.root[2:]), batch.device_count, bpc_per_device],
            f"register {batch.device_count} devices",
        ),
    )
