"""Minting the BPC owed for contributed patents: exactly once, across retries and restarts.

A mint is owed when a contributed patent is admitted: ``patent_service.decide``
records it as ``pending`` in the admission's transaction, under the unique
idempotency key of the published mint policy. This module sends it:

    pending ──(commit: sending, from_block = head)──▶ send BPC.mint ──(commit)──▶ minted
                                                        └─ the contract refuses ─▶ failed

Why this order is exactly-once
------------------------------
* Only the caller whose compare-and-set moves a row out of ``pending`` sends its
  transaction, and that move is committed *before* the transaction is sent.
* A row found in ``sending`` (the process stopped between sending and recording,
  or the request was retried meanwhile) is never sent blindly: the BPC
  ``Transfer`` events from the zero address to the recipient since ``from_block``
  are searched for one with the mint's amount whose transaction no other mint
  has claimed. If found, the mint is recorded with that transaction.
* Only if none is found is it sent again — at once on the embedded EVM, which
  mines before it answers, and on a remote chain only after
  ``EXCHANGE_POOL_MINT_RESEND_AFTER_S``, so a transaction still in a mempool is
  not duplicated. (A transaction stuck longer than that is the residual risk;
  raise the setting for slow networks.)
* Each state change is one committed transaction of its own (not the request's),
  because the chain cannot roll back with the database.
"""

from __future__ import annotations

from datetime import timedelta
from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession

from exchange.db.base import utc_now
from exchange.kit.errors import ChainRejected, NotFound
from exchange.kit.logging import get_logger
from exchange.pool import repository
from exchange.pool.indexer import fetch_events, hex32, topic_of_address
from exchange.pool.models import ContributionMint, MintStatus
from exchange.pool.service import PoolContext, record_audit

log = get_logger(__name__)

MINTER_ACTOR = "system:minter"
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


async def process_open_mints(context: PoolContext) -> list[ContributionMint]:
    """Send or reconcile every mint that is pending or sending, oldest first."""
    async with context.sessionmaker() as session:
        mint_ids = await repository.open_mint_ids(session)
    return [await process_mint(context, mint_id) for mint_id in mint_ids]


async def process_mint(context: PoolContext, mint_id: int, *, retry_failed: bool = False) -> ContributionMint:
    """Bring one mint as far as it can go; ``retry_failed`` sends a refused mint again."""
    mint, ours = await _claim(context, mint_id, retry_failed=retry_failed)
    if not ours:
        return mint
    pool = context.chain.pool
    recipient, amount_wei = mint.recipient, mint.amount_wei
    try:
        receipt = await context.chain.run(lambda: pool.mint_bpc(recipient, amount_wei))
    except ChainRejected as exc:
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

    Returns the row and whether this caller must now send its transaction.
    """
    async with context.sessionmaker() as session, session.begin():
        mint = await repository.mint(session, mint_id, for_update=True)
        if mint is None:
            raise NotFound(f"no contribution mint {mint_id}")
        if mint.status == MintStatus.FAILED and retry_failed:
            await repository.claim_mint(
                session, mint_id, MintStatus.FAILED, {"status": MintStatus.PENDING.value}
            )
            await session.refresh(mint)
        now = utc_now()
        if mint.status == MintStatus.SENDING:
            if await _reconcile(context, session, mint):
                return mint, False
            started = mint.sending_at or now
            if now - started < timedelta(seconds=context.resend_after_s):
                return mint, False  # perhaps still on its way: leave it to a later pass
            head = await context.indexer.head_block()
            ours = await repository.claim_mint(
                session,
                mint_id,
                MintStatus.SENDING,
                {"from_block": head + 1, "sending_at": now, "updated_at": now},
                sending_at=mint.sending_at,
            )
            log.warning("pool.mint_resending", mint_id=mint_id, patent_id=mint.patent_id, ours=ours)
        elif mint.status == MintStatus.PENDING:
            head = await context.indexer.head_block()
            ours = await repository.claim_mint(
                session,
                mint_id,
                MintStatus.PENDING,
                {
                    "status": MintStatus.SENDING.value,
                    "from_block": head + 1,
                    "sending_at": now,
                    "updated_at": now,
                    "error": None,
                },
            )
        else:
            return mint, False
        await session.refresh(mint)
        return mint, ours


async def _reconcile(context: PoolContext, session: AsyncSession, mint: ContributionMint) -> bool:
    """Look on chain for this mint's transfer; record it if found. True when it was."""
    if mint.from_block is None:
        raise RuntimeError(f"mint {mint.id} is sending but has no from_block")
    events = await context.chain.run(
        partial(
            fetch_events,
            context.chain.pool.bpc,
            ("Transfer",),
            mint.from_block,
            "latest",
            (topic_of_address(ZERO_ADDRESS), topic_of_address(mint.recipient)),
        )
    )
    claimed = await repository.recorded_mint_tx_hashes(session)
    for event in events:
        if int(event.args["value"]) == mint.amount_wei and event.tx_hash not in claimed:
            mint.status = MintStatus.MINTED.value
            mint.tx_hash = event.tx_hash
            mint.minted_block = event.block_number
            mint.updated_at = utc_now()
            await session.flush()
            await _audit_minted(session, mint, reconciled=True)
            log.info("pool.mint_reconciled", mint_id=mint.id, patent_id=mint.patent_id, tx_hash=event.tx_hash)
            return True
    return False


async def _finish(
    context: PoolContext, mint_id: int, *, tx_hash: str | None, block: int | None, error: str | None
) -> ContributionMint:
    async with context.sessionmaker() as session, session.begin():
        mint = await repository.mint(session, mint_id, for_update=True)
        if mint is None:
            raise NotFound(f"no contribution mint {mint_id}")
        if mint.status != MintStatus.SENDING:
            return mint  # reconciled by another pass meanwhile
        mint.updated_at = utc_now()
        if tx_hash is None:
            mint.status, mint.error = MintStatus.FAILED.value, error
            await session.flush()
            await record_audit(
                session,
                actor=MINTER_ACTOR,
                action="contribution.mint_failed",
                subject_type="patent",
                subject_id=mint.patent_id,
                at=utc_now(),
                after=mint,
                reason=error,
            )
            log.warning("pool.mint_failed", mint_id=mint_id, patent_id=mint.patent_id, error=error)
            return mint
        mint.status, mint.tx_hash, mint.minted_block = MintStatus.MINTED.value, tx_hash, block
        await session.flush()
        await _audit_minted(session, mint, reconciled=False)
        log.info("pool.minted", mint_id=mint_id, patent_id=mint.patent_id, amount_wei=mint.amount_wei)
        return mint


async def _audit_minted(session: AsyncSession, mint: ContributionMint, *, reconciled: bool) -> None:
    await record_audit(
        session,
        actor=MINTER_ACTOR,
        action="contribution.minted",
        subject_type="patent",
        subject_id=mint.patent_id,
        at=utc_now(),
        after=mint,
        tx_hashes=[mint.tx_hash] if mint.tx_hash else [],
        reason="found on chain after an interrupted send" if reconciled else None,
    )
