"""Minting the BPC owed for contributed patents: exactly once, across retries and restarts.

A mint is owed when a contributed patent is admitted: ``patent_service.decide``
records it as ``pending`` in the admission's transaction, under the unique
idempotency key of the published mint policy. This module sends it:

    pending ──(commit: sending, from_block = head)──▶ BPC.mintOnce(key) ──(commit)──▶ minted
                                                        └─ the contract refuses ─▶ failed

Why this order is exactly-once
------------------------------
* The chain enforces it: the mint is sent as ``BPC.mintOnce(recipient, amount,
  key)`` with the row's idempotency key, and BPC mints a key once. A transaction
  sent again, because the first was thought lost, or by a concurrent request,
  reverts ``BPCMintKeyUsed`` instead of minting twice.
* Only the caller whose compare-and-set moves a row out of ``pending`` sends its
  transaction, and that move is committed *before* the transaction is sent, with
  the block the search for it starts from (set by the first send only).
* A row found in ``sending`` (the process stopped between sending and recording,
  or the request was retried meanwhile) is first looked for among BPC's
  ``MintedOnce`` events with its key. If found, the mint is recorded with that
  transaction. Only if none is found is it sent again: at once on the embedded
  EVM, which mines before it answers, and on a remote chain only after
  ``EXCHANGE_POOL_MINT_RESEND_AFTER_S``, so that a transaction still in a mempool
  is not paid for twice (the second would revert).
* A revert while BPC reports the key used (the resend of a mint that was mined
  after all, whatever the revert's reason) records the mint found under the key.
  Any other revert marks the mint ``failed``; ``retry_failed`` sends it again.
* Each state change is one committed transaction of its own (not the request's),
  because the chain cannot roll back with the database. The chain is read between
  them, with no transaction open (on SQLite a transaction holds the database's write
  lock, and a chain call can wait behind another's receipt); each change then applies
  only if the row is still as it was read.
"""

from __future__ import annotations

from datetime import timedelta
from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession
from web3 import Web3

from exchange.db.base import utc_now
from exchange.kit.errors import ChainRejected, ChainUnavailable, NotFound
from exchange.kit.logging import get_logger
from exchange.pool import repository
from exchange.pool.indexer import ChainEvent, hex32, search_events
from exchange.pool.models import ContributionMint, MintStatus
from exchange.pool.service import PoolContext, record_audit

log = get_logger(__name__)

MINTER_ACTOR = "system:minter"


async def process_open_mints(context: PoolContext) -> list[ContributionMint]:
    """Send or reconcile every mint that is pending or sending, oldest first.

    A mint that cannot go on now (the chain does not answer, or refuses a search) is logged
    and left for the next pass; the mints after it are still tried. The mints processed are
    returned.
    """
    async with context.sessionmaker() as session:
        mint_ids = await repository.open_mint_ids(session)
    processed = []
    for mint_id in mint_ids:
        try:
            processed.append(await process_mint(context, mint_id))
        except ChainUnavailable as exc:
            log.warning("pool.mint_deferred", mint_id=mint_id, detail=exc.detail)
    return processed


async def process_mint(context: PoolContext, mint_id: int, *, retry_failed: bool = False) -> ContributionMint:
    """Bring one mint as far as it can go; ``retry_failed`` sends a refused mint again."""
    mint, ours = await _claim(context, mint_id, retry_failed=retry_failed)
    if not ours:
        return mint
    pool = context.chain.pool
    recipient, amount_wei, key = mint.recipient, mint.amount_wei, mint.idempotency_key
    try:
        receipt = await context.chain.run(lambda: pool.mint_bpc_once(recipient, amount_wei, key))
    except ChainRejected as exc:
        if await context.chain.run(lambda: pool.bpc_mint_key_used(key)):
            return await _record_minted_under_key(context, mint_id)
        return await _finish(context, mint_id, tx_hash=None, block=None, error=exc.detail)
    # ChainUnavailable propagates: the row stays "sending" and the next pass reconciles it.
    return await _finish(
        context,
        mint_id,
        tx_hash=hex32(receipt["transactionHash"]),
        block=int(receipt["blockNumber"]),
        error=None,
    )


async def _claim(context: PoolContext, mint_id: int, *, retry_failed: bool) -> tuple[ContributionMint, bool]:
    """Commit the intent to send (``sending``), or find the mint already done on chain.

    Returns the row and whether this caller must now send its transaction. ``from_block``
    is set by the first claim only, so the search for the mint always covers the block of
    its first transaction, however often it was sent again. The chain is read with no
    transaction open (on SQLite a transaction holds the database's write lock); each step
    then moves the row only if it is still as it was read (compare-and-set).
    """
    async with context.sessionmaker() as session, session.begin():
        mint = await _load(session, mint_id)
        if mint.status == MintStatus.FAILED and retry_failed:
            await repository.claim_mint(
                session, mint_id, MintStatus.FAILED, {"status": MintStatus.PENDING.value}
            )
            await session.refresh(mint)
    if mint.status == MintStatus.SENDING:
        found = await _find_on_chain(context, mint, mint.from_block)
        if found is not None:
            return await _record_found(context, mint_id, found), False
        now = utc_now()
        if now - (mint.sending_at or now) < timedelta(seconds=context.resend_after_s):
            return mint, False  # perhaps still on its way: leave it to a later pass
        move: dict[str, object] = {"sending_at": now, "updated_at": now}
        expected, sending_at = MintStatus.SENDING, mint.sending_at
        log.warning("pool.mint_resending", mint_id=mint_id, patent_id=mint.patent_id)
    elif mint.status == MintStatus.PENDING:
        from_block = mint.from_block
        if from_block is None:
            from_block = await context.indexer.head_block() + 1
        now = utc_now()
        move = {
            "status": MintStatus.SENDING.value,
            "from_block": from_block,
            "sending_at": now,
            "updated_at": now,
            "error": None,
        }
        expected, sending_at = MintStatus.PENDING, None
    else:
        return mint, False
    async with context.sessionmaker() as session, session.begin():
        ours = await repository.claim_mint(session, mint_id, expected, move, sending_at=sending_at)
        return await _load(session, mint_id), ours


async def _load(session: AsyncSession, mint_id: int) -> ContributionMint:
    mint = await repository.mint(session, mint_id, for_update=True)
    if mint is None:
        raise NotFound(f"no contribution mint {mint_id}")
    return mint


async def _find_on_chain(
    context: PoolContext, mint: ContributionMint, from_block: int | None
) -> ChainEvent | None:
    """The ``MintedOnce`` under this mint's key since ``from_block``, if there is one."""
    if from_block is None:
        raise RuntimeError(f"mint {mint.id} is sending but has no from_block")
    return await context.chain.run(
        partial(
            search_events,
            context.chain.pool.bpc,
            ("MintedOnce",),
            from_block,
            (None, mint.idempotency_key),
            _first,
            max_blocks=context.settings.pool_indexer_max_blocks,
        )
    )


def _first(events: list[ChainEvent]) -> ChainEvent | None:
    return events[0] if events else None


async def _record_found(context: PoolContext, mint_id: int, event: ChainEvent) -> ContributionMint:
    """Record the mint found on chain under the mint's key, if the row is still ``sending``.

    A mint under the key to another recipient or of another amount (which this service
    never sends) is not this mint's: it is marked ``failed`` with what was found.
    """
    async with context.sessionmaker() as session, session.begin():
        mint = await _load(session, mint_id)
        if mint.status != MintStatus.SENDING:
            return mint  # recorded by another pass meanwhile
        now = utc_now()
        to, amount = Web3.to_checksum_address(event.args["to"]), int(event.args["amount"])
        if (to, amount) != (Web3.to_checksum_address(mint.recipient), mint.amount_wei):
            error = f"BPC minted {amount} to {to} under this mint's key in {event.tx_hash}"
            await _mark_failed(session, mint, error, tx_hashes=[event.tx_hash])
            log.error("pool.mint_key_used_otherwise", mint_id=mint.id, tx_hash=event.tx_hash)
            return mint
        mint.status = MintStatus.MINTED.value
        mint.tx_hash = event.tx_hash
        mint.minted_block = event.block_number
        mint.updated_at = now
        await session.flush()
        await _audit_minted(session, mint, reconciled=True)
        log.info("pool.mint_reconciled", mint_id=mint.id, patent_id=mint.patent_id, tx_hash=event.tx_hash)
        return mint


async def _record_minted_under_key(context: PoolContext, mint_id: int) -> ContributionMint:
    """BPC reports the mint's key used: record the mint made under it.

    It is looked for from the mint's first send, then from the pool's deployment (a
    key used before this database knew of it).
    """
    async with context.sessionmaker() as session:
        mint = await _load(session, mint_id)
    if mint.status != MintStatus.SENDING:
        return mint  # recorded by another pass meanwhile
    found = await _find_on_chain(context, mint, mint.from_block)
    if found is None:
        found = await _find_on_chain(context, mint, context.chain.runtime.deployment.deploy_block)
    if found is None:
        # The node that answered the key and the one that answered the logs disagree (a load
        # balancer's nodes a block apart, say): the row stays "sending", the next pass looks again.
        raise ChainUnavailable(
            f"BPC reports mint {mint_id}'s key used, but the node's logs show no MintedOnce with it yet"
        )
    return await _record_found(context, mint_id, found)


async def _finish(
    context: PoolContext, mint_id: int, *, tx_hash: str | None, block: int | None, error: str | None
) -> ContributionMint:
    async with context.sessionmaker() as session, session.begin():
        mint = await _load(session, mint_id)
        if mint.status != MintStatus.SENDING:
            return mint  # reconciled by another pass meanwhile
        if tx_hash is None:
            await _mark_failed(session, mint, error or "refused by BPC")
            log.warning("pool.mint_failed", mint_id=mint_id, patent_id=mint.patent_id, error=error)
            return mint
        mint.updated_at = utc_now()
        mint.status, mint.tx_hash, mint.minted_block = MintStatus.MINTED.value, tx_hash, block
        await session.flush()
        await _audit_minted(session, mint, reconciled=False)
        log.info("pool.minted", mint_id=mint_id, patent_id=mint.patent_id, amount_wei=mint.amount_wei)
        return mint


async def _mark_failed(
    session: AsyncSession, mint: ContributionMint, error: str, *, tx_hashes: list[str] | None = None
) -> None:
    mint.status, mint.error, mint.updated_at = MintStatus.FAILED.value, error, utc_now()
    await session.flush()
    await _audit(session, mint, "contribution.mint_failed", reason=error, tx_hashes=tx_hashes or [])


async def _audit_minted(session: AsyncSession, mint: ContributionMint, *, reconciled: bool) -> None:
    await _audit(
        session,
        mint,
        "contribution.minted",
        reason="found on chain after an interrupted send" if reconciled else None,
        tx_hashes=[mint.tx_hash] if mint.tx_hash else [],
    )


async def _audit(
    session: AsyncSession, mint: ContributionMint, action: str, *, reason: str | None, tx_hashes: list[str]
) -> None:
    """Record what the minter did to ``mint``, as it now is, in the audit log."""
    await record_audit(
        session,
        actor=MINTER_ACTOR,
        action=action,
        subject_type="patent",
        subject_id=mint.patent_id,
        at=utc_now(),
        after=mint,
        tx_hashes=tx_hashes,
        reason=reason,
    )
